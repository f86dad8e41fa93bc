"""``StateConfig`` (the ``state:`` key of the model-routing file) and ``build_state``: the backends by
URL scheme, clear errors, no secret in a URL, and nothing of redis-py loaded until it is used."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from router.dispatch import model_routing_from_dict
from router.errors import ConfigError, MissingDependency
from router.state import STATES, MemoryState, RedisState, StateConfig, build_state


def _routing(state: dict[str, Any]) -> Any:
    return model_routing_from_dict({"state": state}, "models.yaml")


def test_the_default_is_the_memory_state() -> None:
    config = _routing({})
    assert config.state == StateConfig() and config.state.url == "memory" and config.state.prefix == "router:"
    state = build_state(config.state, config.state_limits())
    assert isinstance(state, MemoryState) and state.describe() == {"backend": "memory", "url": "memory",
                                                                     "prefix": "router:"}
    assert STATES.names() == ["memory", "redis", "rediss"]


def test_an_unknown_scheme_names_the_value_and_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        _routing({"url": "mongodb://db:27017"})
    text = str(info.value)
    assert "models.yaml: state.url" in text and "'mongodb'" in text and "memory, redis, rediss" in text


@pytest.mark.parametrize("url", ["redis://:hunter2secret@127.0.0.1:6379/0",
                                 "rediss://default:hunter2secret@cache.example.com:6380/1"])
def test_a_password_in_the_url_is_refused_without_being_echoed(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        _routing({"url": url})
    text = str(info.value)
    assert "password in the URL is refused" in text and "state.password_env" in text
    assert "hunter2secret" not in text


@pytest.mark.parametrize("field, value, message", [
    ("url", "redis://", "names no host"),
    ("url", "redis://127.0.0.1:notaport/0", "not a valid URL"),
    ("prefix", "my prefix", "should match pattern"),
    ("prefix", "", "at least 1 character"),
    ("prefix", "p" * 65, "at most 64 characters"),
    ("timeout_s", 0, "greater than 0"),
    ("timeout_s", 31, "less than or equal to 30"),
    ("retry_after_s", 0, "greater than 0"),
    ("retry_after_s", 301, "less than or equal to 300"),
    ("max_connections", 0, "greater than or equal to 1"),
    ("max_connections", 10_001, "less than or equal to 10000"),
    ("pasword_env", "X", "unknown key 'state.pasword_env'"),
])
def test_bad_settings_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _routing({"url": "redis://127.0.0.1:6379/0", field: value} if field != "url" else {"url": value})
    assert message in str(info.value) and ("state." + field in str(info.value) or field == "pasword_env")


def test_every_limit_takes_its_edge_values() -> None:
    config = _routing({"url": "redis://127.0.0.1:6379/0", "prefix": "p" * 64, "timeout_s": 30, "retry_after_s": 300,
                       "max_connections": 10_000}).state
    assert (len(config.prefix), config.timeout_s, config.retry_after_s, config.max_connections) == (
        64, 30, 300, 10_000)
    config = _routing({"url": "redis://127.0.0.1:6379/0", "prefix": "p", "timeout_s": 0.001,
                       "retry_after_s": 0.001, "max_connections": 1}).state
    assert (config.prefix, config.timeout_s, config.retry_after_s, config.max_connections) == ("p", 0.001, 0.001, 1)


def test_the_defaults() -> None:
    config = StateConfig()
    assert (config.timeout_s, config.retry_after_s, config.max_connections, config.password_env) == (
        0.5, 1.0, 64, None)


def test_with_url_validates_the_new_url() -> None:
    assert StateConfig().with_url("redis://127.0.0.1:6379/2").scheme == "redis"
    with pytest.raises(ValidationError):
        StateConfig().with_url("nosuch://x")


def test_the_redis_state_connects_on_first_use_only() -> None:
    state = build_state(StateConfig(url="redis://127.0.0.1:1/0"))  # nothing listens there: no error yet
    assert isinstance(state, RedisState) and state.describe()["url"] == "redis://127.0.0.1:1/0"


def test_without_redis_py_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import router.state._redis as module

    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match=r"pip install 'tiered-router\[redis\]'"):
        build_state(StateConfig(url="redis://127.0.0.1:6379/0"))


def test_hold_s_outlasts_any_step_or_call() -> None:
    config = model_routing_from_dict({"dispatch_timeout_s": 90})
    assert config.state_limits().hold_s == 150.0  # dispatch_timeout_s (over every model's timeout_s) + 60
    slow = model_routing_from_dict({"dispatch_timeout_s": 10, "handler_timeout_s": 5,
                                    "defaults": {"diagnostic": {"provider": "anthropic", "model": "claude-sonnet-4-6",
                                                                "timeout_s": 120}}})
    assert slow.state_limits().hold_s == 180.0


def test_importing_the_dispatcher_loads_no_redis() -> None:
    code = ("import sys, router, router.dispatch, router.state; from router.state import build_state; "
            "build_state(); print('redis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
