"""Which shared state `router serve` uses, read from its config alone: no server dependency, so that
`router build --compact` resolves the learned-examples log exactly as the server does without the
``[server]`` extra.

``model_routing``: the dispatcher's model-routing file (``--model-routing``, else the shipped one) with
``--state`` over its ``state.url``. ``learn_state``: that state when it is Redis (its url, prefix and
password_env), where the learned-examples log is then a stream every worker and replica shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from router._strict import format_validation_error
from router.errors import ConfigError
from router.service._config import ServeConfig

if TYPE_CHECKING:
    from router.dispatch import ModelRoutingConfig
    from router.state import StateConfig


def model_routing(config: ServeConfig) -> ModelRoutingConfig:
    """The dispatcher's model-routing file, with ``--state`` (when given) over its ``state.url``."""
    from router.dispatch import load_model_routing

    routing = load_model_routing(config.model_routing)
    if config.state is None:
        return routing
    try:
        state = routing.state.with_url(config.state)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"router serve --state {config.state!r}")) from exc
    return routing.model_copy(update={"state": state})


def learn_state(config: ServeConfig) -> StateConfig | None:
    """The shared state the learned-examples log lives in: the model-routing file's ``state`` (``--state``
    over its url) when that is Redis, so every worker and replica learns from one stream (its key under
    the file's ``prefix``, its password from ``password_env``); None (the file log beside the index)
    otherwise. With neither ``--state``, ``--model-routing`` nor ``--skills`` no file is read: the shipped
    one's state is memory."""
    if config.state is None and config.model_routing is None and not config.skills:
        return None
    state = model_routing(config).state
    return state if state.scheme in ("redis", "rediss") else None
