"""The proxy: OpenAI- and Anthropic-compatible chat endpoints that route each turn by its intent.

``ChatProxy`` routes a parsed request (``ProxyRequest``, from the wire modules ``_openai_wire`` and
``_anthropic_wire``) with ``ChatRouter`` and forwards it through a ``Dispatcher``'s chain under the
model-routing file's ``chat`` stage; ``router serve --proxy`` serves it over HTTP (router/service/proxy/).
The configuration is the model-routing file's ``proxy:`` section (``ProxyConfig``).

Lazy, like ``router.providers``' adapters: nothing here is imported until a name is used, so that
``router.dispatch`` (which defines ``ProxyConfig``) and this package never import each other at start.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.dispatch._config import OutOfScopeConfig, ProxyConfig, StickyConfig
    from router.proxy._proxy import ChatProxy, ProxyAnswer, ProxyStream, Session
    from router.proxy._request import ProxyRequest, WireLimits
    from router.proxy._routing import AUTO, ChatRouter, Route
    from router.proxy._sticky import STICKY_STORES, MemorySticky, RedisSticky, Remembered, StickyStore, build_sticky

_LAZY = {
    "OutOfScopeConfig": "router.dispatch._config", "ProxyConfig": "router.dispatch._config",
    "StickyConfig": "router.dispatch._config",
    "ChatProxy": "router.proxy._proxy", "ProxyAnswer": "router.proxy._proxy", "ProxyStream": "router.proxy._proxy",
    "Session": "router.proxy._proxy",
    "ProxyRequest": "router.proxy._request", "WireLimits": "router.proxy._request",
    "AUTO": "router.proxy._routing", "ChatRouter": "router.proxy._routing", "Route": "router.proxy._routing",
    "STICKY_STORES": "router.proxy._sticky", "MemorySticky": "router.proxy._sticky",
    "RedisSticky": "router.proxy._sticky", "Remembered": "router.proxy._sticky",
    "StickyStore": "router.proxy._sticky", "build_sticky": "router.proxy._sticky",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router.proxy' has no attribute {name!r}")


__all__ = [
    "AUTO",
    "STICKY_STORES",
    "ChatProxy",
    "ChatRouter",
    "MemorySticky",
    "OutOfScopeConfig",
    "ProxyAnswer",
    "ProxyConfig",
    "ProxyRequest",
    "ProxyStream",
    "RedisSticky",
    "Remembered",
    "Route",
    "Session",
    "StickyConfig",
    "StickyStore",
    "WireLimits",
    "build_sticky",
]
