"""One run of the comparison: every method on every dataset, then the scaling sweep, then the report."""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from router._config import EncoderConfig, VectorIndexConfig
from router._progress import QUIET, Progress, make_progress
from router._strict import Strict
from router.bench._cost import CostModel
from router.bench._data import BenchData, load_bench_data
from router.bench._metrics import Record, coverage_curve, operating_point, summarize
from router.bench._scaling import run_scaling
from router.bench.methods import METHODS, OPTIONAL, Method, MethodContext
from router.datasets import DATASETS
from router.errors import ConfigError, MissingDependency
from router.llm._config import LLMBackendConfig, LLMConfig

DEFAULT_LLM = LLMBackendConfig(backend="llama_cpp", model="smollm2-135m-q4", timeout_s=60.0)
LLM_METHODS = {"tier2", "llm-every-turn"}


def _known(kind: str, value: list[str], known: Collection[str]) -> list[str]:
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {unknown}; known: {sorted(known)}")
    return value


class CompareConfig(Strict):
    out: Path
    datasets: list[str] = Field(default_factory=lambda: ["clinc150", "banking77"], min_length=1)
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    # Test queries per method: None is the whole test split; the LLM methods take seeded samples.
    test_limit: int | None = Field(None, ge=1)
    tier2_sample: int | None = Field(1000, ge=1)
    every_turn_sample: int | None = Field(40, ge=1)
    # A slice for quick runs (the test): the first intents by name, and at most this many rows each.
    max_intents: int | None = Field(None, ge=2)
    train_per_intent: int | None = Field(None, ge=2)
    encoder: EncoderConfig = EncoderConfig(threads=1, cache_size=0)
    llm: LLMBackendConfig = DEFAULT_LLM
    mine_rules: bool = False
    # The fine-tuned row (tiers01-finetuned): its epochs; everything else is FinetuneConfig's defaults.
    finetune_epochs: int = Field(3, ge=1, le=1000)
    vcpu_hour_usd: float = Field(0.05, ge=0)
    price_model: str = "gpt-5.4-nano"
    scaling_sizes: list[int] = Field(default_factory=lambda: [1_000, 4_096, 10_000, 100_000, 1_000_000])
    seed: int = 0
    command: str = ""

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        return _known("dataset", value, DATASETS)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        return _known("method", value, METHODS)

    @field_validator("scaling_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(n < 10 for n in value):
            raise ValueError(f"scaling sizes must be at least 10 vectors, got {value}")
        return value

    @model_validator(mode="after")
    def _llm_timeout(self) -> CompareConfig:
        if self.llm.backend == "llama_cpp" and self.llm.timeout_s < 10:
            raise ValueError(f"llm.timeout_s={self.llm.timeout_s}: an every-intent prompt on llama.cpp "
                             "takes seconds per call; give it at least 10")
        return self

    def sample_for(self, method: str) -> int | None:
        return {"tier2": self.tier2_sample, "llm-every-turn": self.every_turn_sample}.get(method)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {_cpus()} CPUs"}
    for package in ("tiered-router", "semantic-router", "faiss-cpu", "onnxruntime", "llama_cpp_python", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_method(method: Method, data: BenchData, progress: Callable[[str], None] | Progress) -> dict[str, Any]:
    """Build ``method``, ask it about its sample of test queries one at a time, summarise.

    ``progress``: a ``Progress`` (a stage for the build, a bar of the queries), or a line printer."""
    label = f"{data.name}: {method.name}"
    show, say = (progress, None) if isinstance(progress, Progress) else (QUIET, progress)
    if say is not None:
        say(f"{label}: building")
    with show.stage(f"{label}: build"):
        build_seconds = method.build()
    rows = data.sample(method.sample)
    records = []
    for count, row in enumerate(show.iterate(rows, label, unit="query"), 1):
        text = data.test.texts[row]
        start = time.perf_counter_ns()
        outcome = method.classify(text)
        records.append(Record(text, data.test.labels[row], outcome, (time.perf_counter_ns() - start) / 1000.0))
        if say is not None and (count % 500 == 0 or (method.sample is not None and count % 20 == 0)):
            say(f"{label}: {count}/{len(rows)}")
    return {"method": method.name, "dataset": data.name, "build_s": build_seconds, "notes": list(method.notes),
            "rows": rows, "summary": summarize(records), "curve": coverage_curve(records),
            "operating_point": operating_point(records), "records": records}


def _paired(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any] | None:
    """(a)'s figures on exactly the queries a sampled method saw, for a like-for-like difference."""
    rows = set(other["rows"])
    if len(rows) == len(reference["rows"]):
        return None
    picked = [r for row, r in zip(reference["rows"], reference["records"], strict=True) if row in rows]
    return {"method": other["method"], "n": len(picked), "reference": summarize(picked)}


def run_compare(config: CompareConfig, progress: Callable[[str], None] | Progress | None = None) -> dict[str, Any]:
    """Run everything ``config`` asks for and write the report into ``config.out``; return the results.

    ``progress``: a ``Progress``, or a line printer; None shows bars on stderr when it is a terminal."""
    say = make_progress(True) if progress is None else progress
    check_llm_installed(config)
    started = time.perf_counter()
    llm = LLMConfig(backends=[config.llm], gate="on")
    cost = CostModel.from_table(config.price_model, config.vcpu_hour_usd, config.llm)
    config.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="router-bench-"))
    results: dict[str, Any] = {"config": config.model_dump(mode="json"), "versions": _versions(),
                               "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "cost_model": cost.describe(), "datasets": {}}
    try:
        for name in config.datasets:
            data = load_bench_data(name, max_intents=config.max_intents, train_per_intent=config.train_per_intent,
                                   test_limit=config.test_limit, seed=config.seed)
            ctx = MethodContext(data, config.encoder, llm, scratch / name, config.mine_rules,
                                finetune_epochs=config.finetune_epochs)
            runs, skipped = [], []
            for key in config.methods:
                method = METHODS.get(key)(ctx, config.sample_for(key))
                try:
                    run = run_method(method, data, say)
                except MissingDependency as exc:
                    if key not in OPTIONAL:
                        raise
                    skipped.append({"key": key, "method": method.name, "reason": str(exc)})
                    _say(say, f"{name}: {method.name}: skipped, {exc}")
                    continue
                finally:
                    method.close()
                run["key"] = key
                run["summary"].update(cost.per_1k(run["records"]))
                runs.append(run)
            reference = next((r for r in runs if r["key"] == "tiers01"), None)
            paired = [p for r in runs if reference is not None and r is not reference
                      and (p := _paired(reference, r)) is not None]
            results["datasets"][name] = {"n_test": len(data.test), "n_intents": len(data.intents),
                                         "n_train": len(data.train), "runs": runs, "paired": paired,
                                         "skipped": skipped}
        if config.scaling_sizes:
            results["scaling"] = run_scaling(config.scaling_sizes, VectorIndexConfig(), say)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - started
    from router.bench._report import write_report

    write_report(results, config.out)
    return results


def _say(progress: Callable[[str], None] | Progress, text: str) -> None:
    if isinstance(progress, Progress):
        progress.line(text)
    else:
        progress(text)


def check_llm_installed(config: CompareConfig) -> None:
    """Fail before the first build when an LLM method is asked for and its backend cannot load."""
    if not LLM_METHODS & set(config.methods) or config.llm.backend != "llama_cpp":
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise ConfigError("methods tier2 and llm-every-turn need llama-cpp-python (make install-llm), or "
                          "--llm memory / openai_compatible, or leave them out with --methods") from exc
    from router.providers._llama_cpp import gguf_path

    assert config.llm.model is not None  # required for llama_cpp by LLMBackendConfig
    gguf_path(config.llm.model)  # the model package installed and its file intact
