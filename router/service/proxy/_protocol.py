"""What the proxy family renders itself (the chat bodies are the wire modules' in router/proxy/):
Anthropic's model list, and the Guard's refusals on the proxy paths in each API's error format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from router.proxy import _anthropic_wire as anthropic
from router.proxy import _openai_wire as openai

OPENAI_PATHS = frozenset({"/v1/chat/completions"})
ANTHROPIC_PATHS = frozenset({"/v1/messages"})
MODELS_PATH = "/v1/models"
PROXY_PATHS = OPENAI_PATHS | ANTHROPIC_PATHS | {MODELS_PATH}
# Where the service key may come as ``x-api-key`` (the Anthropic SDK's header) instead of a bearer token.
ANTHROPIC_KEY_PATHS = ANTHROPIC_PATHS | {MODELS_PATH}

# The Guard's refusal statuses, as each API names them.
_OPENAI_TYPES = {401: ("invalid_request_error", "invalid_api_key"), 403: ("invalid_request_error", None),
                 408: ("invalid_request_error", "timeout"), 413: ("invalid_request_error", "request_too_large"),
                 503: ("server_error", "overloaded"), 504: ("server_error", "timeout")}
_ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 408: "timeout_error",
                    413: "request_too_large", 503: "overloaded_error", 504: "timeout_error"}


def anthropic_models_body(ids: list[str], created: int) -> dict[str, Any]:
    """Anthropic's ``GET /v1/models`` list (one page holding them all)."""
    at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = [{"type": "model", "id": i, "display_name": i, "created_at": at} for i in ids]
    return {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None}


def api_of(path: str, headers: dict[bytes, bytes]) -> str | None:
    """Which API a path speaks (``/v1/models`` by its ``anthropic-version`` header); None: not a proxy path."""
    if path in OPENAI_PATHS:
        return "openai"
    if path in ANTHROPIC_PATHS:
        return "anthropic"
    if path == MODELS_PATH:
        return "anthropic" if b"anthropic-version" in headers else "openai"
    return None


def refusal_body(api: str, status: int, detail: str) -> dict[str, Any]:
    """The Guard's refusal (auth, size, busy, deadline) as the API's error body."""
    if api == "anthropic":
        return anthropic.error_body(_ANTHROPIC_TYPES.get(status, "api_error"), detail)
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return openai.error_body(detail, kind, code, None)
