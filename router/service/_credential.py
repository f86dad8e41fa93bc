"""Which key a request carried, as the Guard (``_guard.py``) found it, for the routes whose answer depends on it.

The Guard authenticates; a route that trusts some requests more than others (the learning routes:
``source: "human"`` only from the approver key when there is one) reads the credential from the
request's state rather than judging the body's word for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.types import Scope

STATE_KEY = "credential"


@dataclass(frozen=True, slots=True)
class Credential:
    """The key a request carried: the approvers' or the service's, and the variable it came from. The Guard
    puts it in the request's state (None: no key, on a service without ``--api-key-env``)."""

    kind: Literal["approver", "service"]
    env: str | None

    @property
    def label(self) -> str:
        """What a log records of it: ``approver_key:VAR`` or ``service_key:VAR``, never the key."""
        return f"{self.kind}_key:{self.env}"


def credential_of(scope: Scope) -> Credential | None:
    """The credential the Guard found on this request (None without one, or without a Guard)."""
    credential = scope.get("state", {}).get(STATE_KEY)
    return credential if isinstance(credential, Credential) else None
