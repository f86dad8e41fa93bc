"""The one error tree of tiered-router.

Every error the library raises on purpose is a ``RouterError``; vendor
exceptions (ONNX Runtime, FAISS, YAML, pydantic) are translated at the
boundary so callers catch one family::

    RouterError
    ├── ConfigError            bad YAML, unknown key, invalid value, bad intent set
    ├── InputError             a query the router refuses (empty, not a string, too long,
    │                          batch too large); also a ValueError
    ├── ModelError             model package missing, file hash mismatch, export failure
    ├── IndexError_            no index where one was expected, unreadable files
    │   └── StaleIndexError    manifest disagrees with the configured encoder or intents
    └── ProviderError          a model backend (tier-2 LLM, premium provider) failed one call
        ├── ProviderTimeout    no answer within the per-call timeout
        ├── ProviderUnavailable  connection refused or dropped, HTTP 5xx
        ├── BadResponse        malformed body, or an answer outside the offered labels
        ├── RequestRejected    the backend refused the request itself (HTTP 4xx): not retryable
        └── CircuitOpen        the backend's circuit breaker is open; the call was not made

A ``ProviderError`` carries ``backend`` (which one failed) and ``reason`` (a short code
such as ``timeout`` or ``http_500``) so a degraded Decision can say why.

Messages name the parameter and the offending value, and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IndexError_",
    "InputError",
    "ModelError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "BadResponse",
    "RequestRejected",
    "CircuitOpen",
    "RouterError",
    "StaleIndexError",
]


class RouterError(Exception):
    """Base of every error tiered-router raises on purpose."""


class ConfigError(RouterError):
    """A configuration or intent-set file is invalid."""


class InputError(RouterError, ValueError):
    """A query or batch the router refuses to classify."""


class ModelError(RouterError):
    """An encoder model is missing, corrupt or cannot be loaded."""


class IndexError_(RouterError):  # noqa: N801 - trailing underscore avoids shadowing builtin
    """A built index is missing or unreadable."""


class StaleIndexError(IndexError_):
    """A built index does not match the configured encoder or intent set."""


class ProviderError(RouterError):
    """One call to a model backend failed; ``reason`` is a short machine-readable code."""

    reason = "error"

    def __init__(self, backend: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        if reason is not None:
            self.reason = reason


class ProviderTimeout(ProviderError):
    reason = "timeout"


class ProviderUnavailable(ProviderError):
    reason = "unavailable"


class BadResponse(ProviderError):
    reason = "bad_response"


class RequestRejected(ProviderError):
    reason = "rejected"


class CircuitOpen(ProviderError):
    reason = "circuit_open"
