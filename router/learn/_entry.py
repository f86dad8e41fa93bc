"""One line of the learned-examples log, and the text normalisation every comparison uses."""

from __future__ import annotations

import hashlib
import os
import string
import time
from typing import Literal

from pydantic import Field

from router._strict import Strict

Source = Literal["human", "llm"]


_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalise(text: str) -> str:
    """What makes two feedback texts the same example: case, spacing and ASCII punctuation do not count
    ("Wassup!" is "wassup"), so a near-copy of a trained text never counts as held out."""
    return " ".join(text.casefold().translate(_PUNCTUATION).split())


def digest(text: str) -> str:
    """A short stable key of a normalised text (the held-out split's rows are matched by it)."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


def new_entry_id() -> str:
    return os.urandom(12).hex()


class LogEntry(Strict):
    """``learn``: an example taken (``heldout``: kept for the precision check, never trained on); ``review``: a
    tier-2 answer waiting for a person; ``reject``: a review turned down (``review_id``). An approved review
    is a ``learn`` entry naming its ``review_id``. ``intent`` is None exactly when ``out_of_scope``."""

    op: Literal["learn", "review", "reject"]
    id: str = Field(default_factory=new_entry_id)
    at: float = Field(default_factory=time.time)
    text: str = ""
    intent: str | None = None
    out_of_scope: bool = False
    source: Source = "human"
    heldout: bool = False
    override: bool = False
    decision_id: str | None = None
    confidence: float | None = None
    review_id: str | None = None
    by: str | None = None

    @property
    def label(self) -> str:
        """The intent, or ``oos``."""
        return "oos" if self.out_of_scope or self.intent is None else self.intent
