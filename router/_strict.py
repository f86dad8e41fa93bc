"""The one strict config base and the one ``ValidationError`` formatter.

Every config model derives from ``Strict``: an unknown key is an error, never silently dropped (a
typo would otherwise leave a default in force). A model that needs more settings adds them with
its own ``model_config = ConfigDict(frozen=True, ...)``: pydantic merges it over the base's.

``format_validation_error`` turns pydantic's errors into one line per problem, each naming the
field path and the value given, e.g. ``router.yaml: static.dim: Input should be greater than 0
(got -3)`` or ``intents.yaml: intent 'greet': unknown key 'exampels'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

# A value longer than this is cut in the message: an error names the value, it does not echo a whole list.
_MAX_VALUE_CHARS = 200


class Strict(BaseModel):
    """A config model: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _item_name(data: Any, key: Any, index: int) -> str | None:
    """The ``name`` of ``data[key][index]`` when it has one (an intent, a backend), to say which item failed."""
    try:
        item = data[key][index]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(item, Mapping):
        return None
    name = item.get("name")
    return name if isinstance(name, str) else f"#{index}"


def format_validation_error(exc: ValidationError, source: str, data: Any = None) -> str:
    """``source: field.path: message (got value)`` per error, joined by ``; ``.

    An unknown key reads ``unknown key 'path'``. With ``data`` (what was validated), an error inside a
    named item of a top-level list is placed by the item's name (``intent 'greet'``), not its index.
    """
    parts = []
    for err in exc.errors():
        loc: Sequence[Any] = err["loc"]
        where = source
        if data is not None and len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            name = _item_name(data, loc[0], loc[1])
            if name is not None:
                where += f": {loc[0].removesuffix('s')} {name!r}"
                loc = loc[2:]
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key {key!r}")
            continue
        # A missing field has no value to show, and a whole mapping is noise next to the key that names it.
        hidden = err["type"] == "missing" or isinstance(err["input"], Mapping)
        shown = "" if hidden else f" (got {_value(err['input'])})"
        parts.append(f"{where}: {key + ': ' if key else ''}{err['msg']}{shown}")
    return "; ".join(parts)
