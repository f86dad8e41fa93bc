"""Checks on what callers hand the router: every limit has a default (see LimitsConfig)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from router.errors import InputError


def check_text(text: Any, max_chars: int, field: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"{field} must be a string, got {type(text).__name__}: {text!r:.80}")
    if not text.strip():
        raise InputError(f"{field} is empty or only whitespace ({text!r:.20})")
    if len(text) > max_chars:
        raise InputError(
            f"{field} has {len(text)} characters; the limit (limits.max_text_chars) is {max_chars}"
        )
    return text


def check_batch(texts: Any, max_batch: int, max_chars: int, field: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"{field} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise InputError(f"{field} is an empty list")
    if len(texts) > max_batch:
        raise InputError(f"{field} has {len(texts)} items; the limit (limits.max_batch) is {max_batch}")
    return [check_text(t, max_chars, f"{field}[{i}]") for i, t in enumerate(texts)]
