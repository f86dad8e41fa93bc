"""What a state backend is told: where it lives (``StateConfig``, the ``state:`` key of the
model-routing file) and the limits it enforces (``StateLimits``, made from the model-routing file).

``BudgetConfig`` lives here, not in ``router.dispatch``, because the state enforces it and
``router.state`` never imports ``router.dispatch`` (the dispatcher imports the state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from router._redact import register_secret
from router._strict import Strict
from router.providers import BreakerConfig

Limit = int | None
CostLimit = Decimal | None
BUDGETS = ("session_tokens", "session_cost_usd", "hourly_cost_usd", "session_steps")


class BudgetConfig(Strict):
    """On by default. ``off`` (YAML off/false or the string "off") switches one off; null is refused.

    A session's spend is kept while the session lives: until it has been idle ``session_ttl_s``.
    The ledger never forgets a live session to make room; past ``max_sessions`` live sessions a
    new one is refused (HTTP 503 with Retry-After), so churn cannot reset anyone's usage.
    """

    session_tokens: Limit = Field(50_000, ge=1)
    session_cost_usd: CostLimit = Field(Decimal("1.00"), gt=0)
    hourly_cost_usd: CostLimit = Field(Decimal("25.00"), gt=0, description="all sessions, rolling hour")
    session_steps: Limit = Field(25, ge=1, description="dispatches per session: stops runaway agent loops")
    max_sessions: int = Field(100_000, ge=1, le=10_000_000, strict=True,
                              description="live sessions the ledger holds (about 0.3 KB each); past it a new "
                                          "session gets 503")
    session_ttl_s: float = Field(86_400.0, gt=0, le=30 * 86_400, strict=True,
                                 description="a session idle this long has ended: its usage is forgotten")

    @field_validator(*BUDGETS, mode="before")
    @classmethod
    def _explicit_off(cls, value: Any, info: Any) -> Any:
        if value is None:
            raise ValueError(f"{info.field_name}: an empty value is not a limit; write a number, or `off` "
                             "to switch this budget off on purpose")
        if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
            return None
        if value is True:
            raise ValueError(f"{info.field_name}: true is not a limit; write a number or `off`")
        return value

    def switched_off(self) -> list[str]:
        return [name for name in BUDGETS if getattr(self, name) is None]

    def left(self, tokens: int, cost: Decimal, hour_cost: Decimal, steps: int) -> dict[str, Any]:
        """What remains of each budget after this use (None where switched off): what every state's
        ``left`` and ``totals`` report. ``hour_cost``: settled by all sessions in the rolling hour."""
        zero = Decimal(0)
        return {
            "session_tokens": None if self.session_tokens is None else max(0, self.session_tokens - tokens),
            "session_cost_usd": None if self.session_cost_usd is None
            else float(max(zero, self.session_cost_usd - cost)),
            "hourly_cost_usd": None if self.hourly_cost_usd is None
            else float(max(zero, self.hourly_cost_usd - hour_cost)),
            "session_steps": None if self.session_steps is None else max(0, self.session_steps - steps),
        }


@dataclass(frozen=True)
class StateLimits:
    """The limits a state enforces, from the model-routing file (``ModelRoutingConfig.state_limits()``).

    ``hold_s``: the longest a reservation or a running approval may be held by a process before it
    is presumed dead and let go (a crashed process must not hold a budget or an approval forever):
    longer than any one call or step can take. (A breaker probe expires sooner: its call's
    ``timeout_s`` plus a margin; ``hold_s`` only when the caller gives no ``probe_s``.)
    """

    budgets: BudgetConfig = field(default_factory=BudgetConfig)
    approval_ttl_s: float = 900.0
    max_pending_approvals: int = 10_000
    max_pending_approvals_per_session: int = 10
    hold_s: float = 660.0
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


def scheme_of(url: str) -> str:
    """``memory`` for "memory" (or "memory://"), else the URL's scheme, lower case."""
    return url.split("://", 1)[0].strip().lower() if "://" in url else url.strip().lower()


def without_password(url: str) -> str:
    """The URL with any password masked: what logs, errors and ``describe()`` show."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class StateConfig(Strict):
    """Where budgets, approvals and breakers live: ``memory`` (this process; the default) or Redis,
    shared by every worker and replica that names the same URL and prefix.

    Secrets only from the environment: a password written in the URL is refused; name the variable
    that holds it in ``password_env``.
    """

    url: str = Field("memory", description="memory, or redis://host:port/db (rediss:// for TLS)")
    prefix: str = Field("router:", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:{}-]+$",
                        description="every key's prefix: several deployments can share one Redis")
    timeout_s: float = Field(0.5, gt=0, le=30, description="per Redis command (and connect); past it the step "
                                                            "is refused with StateUnavailable")
    retry_after_s: float = Field(1.0, gt=0, le=300, description="Retry-After of a StateUnavailable answer, and "
                                                                 "the outbox's retry interval")
    password_env: str | None = Field(None, description="environment variable holding the Redis password")
    max_connections: int = Field(64, ge=1, le=10_000, description="Redis connections per event loop")

    @model_validator(mode="before")
    @classmethod
    def _no_password_in_url(cls, data: Any) -> Any:
        # Checked on the whole mapping so that the error never shows the value (it holds the secret).
        url = data.get("url") if isinstance(data, dict) else None
        if isinstance(url, str) and "://" in url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                register_secret(password)  # masked from any later log or error text too
                raise ValueError(f"url: a password in the URL is refused ({without_password(url)}); secrets come "
                                 "from the environment only: put it in a variable and name that in "
                                 "state.password_env")
        return data

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        from router.state._build import STATES  # the registry's factories import this module

        scheme = scheme_of(url)
        if scheme not in STATES:
            raise ValueError(f"unknown state backend {scheme!r}; known schemes: {', '.join(STATES.names())} "
                             "(e.g. memory, redis://127.0.0.1:6379/0)")
        if scheme != "memory":
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 - parsing it is the check
            except ValueError as exc:
                raise ValueError(f"not a valid URL: {exc}") from None
            if not parts.hostname:
                raise ValueError("the URL names no host (e.g. redis://127.0.0.1:6379/0)")
        return url

    @property
    def scheme(self) -> str:
        return scheme_of(self.url)

    def with_url(self, url: str) -> StateConfig:
        """This config with another URL, validated (``router serve --state URL``)."""
        return StateConfig.model_validate({**self.model_dump(), "url": url})
