"""The comparison's LLM methods on the real embedded model (llama.cpp, SmolLM2-135M): `make test-llm`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from router._cli import main

pytestmark = pytest.mark.llm


def test_tier2_and_every_turn_on_llama_cpp(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    code = main(["bench", "compare", "--out", str(tmp_path), "--datasets", "clinc150", "--methods",
                 "tier2,llm-every-turn", "--max-intents", "8", "--train-per-intent", "20", "--limit", "60",
                 "--every-turn-sample", "3", "--scaling-sizes", "none"])
    assert code == 0
    runs = {r["key"]: r for r in json.loads((tmp_path / "results.json").read_text())["datasets"]["clinc150"]["runs"]}
    every = runs["llm-every-turn"]["summary"]
    assert every["n"] == 3 and every["llm_calls_per_100"] == 100.0
    # Real calls report real prompt tokens (8 intents listed), so the remote price is not zero.
    assert every["llm_prompt_tokens_mean"] > 100
    assert every["usd_per_1k_remote_llm"] > runs["tier2"]["summary"]["usd_per_1k_remote_llm"]
    with gzip.open(tmp_path / "queries.jsonl.gz", "rt") as fh:
        queries = [json.loads(line) for line in fh]
    assert all(q["llm"]["model"].endswith(".gguf") for q in queries if q["method"] == "llm-every-turn")


def test_a_missing_model_fails_before_anything_is_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    assert main(["bench", "compare", "--out", str(tmp_path / "r"), "--methods", "tiers01,tier2",
                 "--llm-model", "nosuch", "--scaling-sizes", "none"]) == 1
    assert "llm.backends[].model='nosuch': no manifest" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
