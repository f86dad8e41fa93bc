"""Secrets out of third-party text before it is stored or returned: traces, logs, error bodies.

Provider error bodies may echo the request's key. Two nets catch it: every secret value this
process was configured with (API keys are registered here as they are read from the environment),
and anything shaped like a credential: an ``Authorization`` scheme and its token, a known API-key
prefix (``sk-``, ``AIza``...), a ``key=value`` pair named like a key, a long random-looking token.
Standard library only, so ``router.errors`` can use it at import time.
"""

from __future__ import annotations

import re
import threading

MASK = "[redacted]"
# Shorter values would mask ordinary words in messages; no real API key is this short.
MIN_SECRET_CHARS = 6
# Keys are registered as read (rotation adds one); this bounds the set against a pathological caller.
MAX_SECRETS = 256

_TOKEN = r"[A-Za-z0-9._~+/=-]"
_NAMED = (r"x-goog-api-key|x-api-key|api[_-]?key|access[_-]?token|refresh[_-]?token|client[_-]?secret|"
          r"secret[_-]?key|password")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # `api_key=...`, `"x-api-key": "..."`, `?key=...`: the name says the value is a secret; the name stays.
    (re.compile(rf"((?<![A-Za-z0-9_-])(?:{_NAMED})|[?&]key)([\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{{6,}}",
                re.IGNORECASE), r"\1\2" + MASK),
    # Vendor key prefixes: OpenAI and Anthropic sk-..., Google AIza..., and other common ones.
    (re.compile(r"(?<![A-Za-z0-9_-])(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{8,}"), MASK),
    (re.compile(r"(?<![A-Za-z0-9_-])(?:xai|gsk|hf|ghp|gho|ghs|github_pat|glpat|r8|pplx|nvapi)[-_][A-Za-z0-9_-]{8,}"),
     MASK),
]
# Long runs mixing letters and digits look random: keys and tokens (ids too, which is harmless to mask).
# Matched as whole runs and checked in a callback: linear time on any input.
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}")
# An Authorization value, any case (RFC 9110 schemes are case-insensitive); the scheme stays readable.
_BEARER = re.compile(rf"\b(bearer\s+)({_TOKEN}{{6,}})", re.IGNORECASE)


def _mask_random(match: re.Match[str]) -> str:
    run = match.group(0)
    looks_random = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return MASK if looks_random else run


def _mask_bearer(match: re.Match[str]) -> str:
    # "bearer authentication" is prose; a token has a digit or a symbol, or is long.
    token = match.group(2)
    is_token = len(token) >= 20 or not token.isalpha()
    return match.group(1) + MASK if is_token else match.group(0)


class _Secrets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}  # insertion-ordered: the oldest goes first past MAX_SECRETS
        self._ordered: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_CHARS or value in self._values:
            return
        with self._lock:
            self._values[value] = None
            while len(self._values) > MAX_SECRETS:
                del self._values[next(iter(self._values))]
            # Longest first, so a key that contains another is masked whole.
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def snapshot(self) -> tuple[str, ...]:
        return self._ordered


_SECRETS = _Secrets()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in redacted text from now on (API keys, tokens)."""
    _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-shaped string replaced by ``[redacted]``."""
    for secret in _SECRETS.snapshot():
        if secret in text:
            text = text.replace(secret, MASK)
    text = _BEARER.sub(_mask_bearer, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _LONG_RUN.sub(_mask_random, text)
