"""What text a Runnable's input stands for: the one query the router classifies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from router.errors import InputError

EXPECTED = "a str, a dict with {key!r}, a message, a list of messages or a prompt value"


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.80}"


def _last_human(messages: list[BaseMessage], value: Any) -> str:
    # The query an agent turn is about is what the user said last; the assistant's and tools' turns are not.
    for message in reversed(messages):
        if message.type == "human":
            return str(message.text)
    raise InputError(f"input: no human message to classify among {len(messages)} message(s): {_shown(value)}")


def query_text(value: Any, key: str) -> str:
    """The text to classify in ``value``; raises ``InputError`` naming the value when there is none.

    The text itself is checked by the router (empty, too long) as for any query.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return str(value.text)
    if isinstance(value, Mapping):
        if key not in value:
            raise InputError(f"input: a dict needs the key {key!r} (the text to classify); "
                             f"got keys {sorted(map(str, value))!r:.120}")
        inner = value[key]
        if isinstance(inner, Mapping):  # one level only: {"text": {"text": ...}} is a mistake, not a query
            raise InputError(f"input[{key!r}]: expected a str or messages, got {_shown(inner)}")
        return query_text(inner, key)
    if isinstance(value, PromptValue):
        return _last_human(value.to_messages(), value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        try:
            messages = convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError):
            raise InputError(f"input: a list must hold messages (BaseMessage, str, (role, text) or "
                             f"{{'role': ..., 'content': ...}}); got {_shown(value)}") from None
        return _last_human(messages, value)
    raise InputError(f"input: expected {EXPECTED.format(key=key)}; got {_shown(value)}")
