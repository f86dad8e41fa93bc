from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from router import ConfigError, load_config
from router.llm import LLMConfig


@pytest.mark.parametrize(("backend", "missing"), [
    ({"backend": "vllm", "model": "m"}, "url"),
    ({"backend": "openai_compatible", "url": "http://x/v1"}, "model"),
    ({"backend": "llama_cpp"}, "model"),
])
def test_each_backend_names_the_field_it_needs(backend: dict[str, str], missing: str) -> None:
    with pytest.raises(ValidationError, match=f"backend '{backend['backend']}' needs {missing}"):
        LLMConfig(backends=[backend])


def test_defaults_follow_the_design() -> None:
    c = LLMConfig(backends=[{"backend": "memory"}])
    b = c.backends[0]
    assert (b.timeout_s, c.top_k, c.gate, b.structured, b.method) == (2.0, 5, "auto", "structured_outputs", "logprob")


def test_unknown_keys_and_repeated_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        LLMConfig(backends=[{"backend": "memory", "temprature": 0}])
    with pytest.raises(ValidationError, match=r"repeated: \['memory'\]"):
        LLMConfig(backends=[{"backend": "memory"}, {"backend": "memory"}])
    with pytest.raises(ValidationError, match="timeout_s"):
        LLMConfig(backends=[{"backend": "memory", "timeout_s": 0}])


def test_router_yaml_with_an_llm_section(tmp_path: Path, mini_intents: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(f"""
intents: {mini_intents}
llm:
  backends:
    - backend: vllm
      url: http://127.0.0.1:8001/v1
      model: Qwen/Qwen2.5-1.5B-Instruct
    - backend: openai_compatible
      name: remote
      url: https://api.example.com/v1
      model: gpt-5.4-nano
      api_key_env: OPENAI_API_KEY
  top_k: 4
""")
    config = load_config(path)
    assert config.llm is not None and [b.label for b in config.llm.backends] == ["vllm", "remote"]
    path.write_text(f"intents: {mini_intents}\nllm:\n  backends:\n    - backend: vllm\n      model: m\n")
    with pytest.raises(ConfigError, match="llm.backends.0: Value error, backend 'vllm' needs url"):
        load_config(path)
