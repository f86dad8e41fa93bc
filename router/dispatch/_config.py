"""The model-routing file: which provider and model serve each stage of each skill, and the safety limits.

Moving a skill to another provider is an edit of this file only. Keys left out keep the shipped
defaults (``models.yaml`` next to this module: list prices, provider endpoints, budgets);
``defaults``, ``fallbacks``, ``providers`` and ``prices`` merge per entry, so a file that sets only
``defaults.extraction`` keeps the shipped model of every other stage. Budgets can be switched off
only with the explicit value ``off``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from router._strict import Strict, format_validation_error
from router._yaml_file import read_mapping
from router.errors import ConfigError
from router.providers import BreakerConfig, ProviderConfig, RetryConfig, Target
from router.state import BudgetConfig, StateConfig, StateLimits

# ``chat``: what the proxy (router/proxy/) forwards an agent's chat to, chosen per skill by overrides.<skill>.chat.
Stage = Literal["routing", "extraction", "formatting", "diagnostic", "chat"]
STAGES: tuple[Stage, ...] = ("routing", "extraction", "formatting", "diagnostic", "chat")
SHIPPED = Path(__file__).with_name("models.yaml")


class ModelRef(Strict):
    provider: str = Field(description="a key of `providers`")
    model: str = Field(min_length=1, description="the provider's model id; must have a price")
    timeout_s: float = Field(30.0, gt=0, le=600, description="per attempt, connect to last byte")
    max_tokens: int = Field(1024, ge=1, le=200_000, description="output cap sent to the provider")

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def target(self) -> Target:
        """What the chain calls: the same provider, model and bounds."""
        return Target(self.provider, self.model, self.timeout_s, self.max_tokens)


class Price(Strict):
    """US dollars per million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(None, ge=0, description="default: 10% of input")
    cache_write: Decimal | None = Field(None, ge=0, description="default: the input price")

    @property
    def cached(self) -> Decimal:
        return self.cached_input if self.cached_input is not None else self.input / 10

    @property
    def write(self) -> Decimal:
        return self.cache_write if self.cache_write is not None else self.input


class DispatchBreakerConfig(BreakerConfig):
    """Per (provider, model): 5 failed attempts within 10 minutes open it, whatever succeeded between."""

    window_s: float = Field(600.0, gt=0)
    reset_on_success: bool = False


class TraceConfig(Strict):
    sink: str = Field("jsonl", description="a key of router.dispatch.TRACE_SINKS: jsonl, memory")
    path: str = Field("traces/dispatch.jsonl", description="jsonl sink: file appended to")


# What the proxy answers an out-of-scope turn with when the file names nothing (no model is paid for it).
DEFAULT_REFUSAL = "Sorry, I can't help with that here."


class OutOfScopeConfig(Strict):
    """An out-of-scope ``auto`` turn goes to ``model``, or gets ``refusal`` as the answer (exactly one)."""

    model: ModelRef | None = None
    refusal: str | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> OutOfScopeConfig:
        if (self.model is None) == (self.refusal is None):
            raise ValueError("give exactly one of `model` (a model ref) or `refusal` (a text)")
        return self


class StickyConfig(Strict):
    """Multi-turn: a short follow-up with no intent of its own keeps its session's last confident intent."""

    enabled: bool = False
    max_words: int = Field(6, ge=1, le=1000, description="a longer turn is classified on its own")
    ttl_s: float = Field(1800.0, gt=0, le=30 * 86_400, description="a remembered intent expires after it")
    max_sessions: int = Field(100_000, ge=1, le=100_000_000, description="memory store: least recently used go")


class ProxyConfig(Strict):
    """``router serve --proxy``: OpenAI- and Anthropic-compatible chat endpoints (router/proxy/)."""

    out_of_scope: OutOfScopeConfig = Field(default_factory=lambda: OutOfScopeConfig(refusal=DEFAULT_REFUSAL))
    # best: an unsure (escalated) turn goes by its top candidate's skill; out_of_scope: it is answered as one.
    escalated: Literal["best", "out_of_scope"] = "best"
    sticky: StickyConfig = Field(default_factory=StickyConfig)
    context_turns: int = Field(0, ge=0, le=50, description="earlier user turns joined in when the last is unsure")
    models: list[ModelRef] = Field(default_factory=list, description="more models clients may name")
    default_session: str = Field("proxy", min_length=1, max_length=256)
    session_header: str = Field("x-router-session", pattern=r"^[a-z0-9-]{1,64}$")
    max_messages: int = Field(256, ge=1, le=100_000)
    max_tools: int = Field(128, ge=0, le=10_000)


class ModelRoutingConfig(Strict):
    defaults: dict[Stage, ModelRef]
    overrides: dict[str, dict[Stage, ModelRef]] = Field(default_factory=dict, description="skill -> stage -> model")
    fallbacks: dict[Stage, list[ModelRef]] = Field(default_factory=dict, description="ordered, after the primary")
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict, description="model id -> $ per million tokens")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: DispatchBreakerConfig = Field(default_factory=DispatchBreakerConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    trace: TraceConfig = Field(default_factory=TraceConfig)
    # Where budgets, approvals and breakers live: memory (this process) or a Redis shared by every
    # worker and replica (router/state/, docs/state.md). `router serve --state URL` overrides the url.
    state: StateConfig = Field(default_factory=StateConfig)
    # Pending approvals of `writes` skills: each expires approval_ttl_s after it was made (15 min).
    # A session past its cap is refused (HTTP 429) until one of its own is approved, rejected or
    # expires; the global cap is the last line against many sessions.
    approval_ttl_s: float = Field(900.0, gt=0, le=7 * 86_400, strict=True,
                                  description="a pending approval expires after it")
    max_pending_approvals_per_session: int = Field(10, ge=1, le=10_000, strict=True)
    max_pending_approvals: int = Field(10_000, ge=1, le=1_000_000, strict=True, description="all sessions")
    # One dispatch or approval, end to end: model calls (cut to fit, the fallback still tried),
    # retry waits and the handler. See router/dispatch/_deadline.py.
    dispatch_timeout_s: float = Field(60.0, gt=0, le=3600, strict=True)
    handler_timeout_s: float = Field(30.0, gt=0, le=3600, strict=True,
                                     description="a skill's handler; within dispatch_timeout_s")
    max_text_chars: int = Field(4_000, ge=1, le=1_000_000, description="longest query sent for extraction")
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)

    @model_validator(mode="after")
    def _check_references(self) -> ModelRoutingConfig:
        missing = [s for s in STAGES if s not in self.defaults]
        if missing:
            raise ValueError(f"defaults: every stage needs a default model; missing {missing}")
        refs: list[tuple[str, ModelRef]] = [(f"defaults.{s}", r) for s, r in self.defaults.items()]
        refs += [(f"overrides.{k}.{s}", r) for k, stages in self.overrides.items() for s, r in stages.items()]
        refs += [(f"fallbacks.{s}[{i}]", r) for s, chain in self.fallbacks.items() for i, r in enumerate(chain)]
        refs += [(f"proxy.models[{i}]", r) for i, r in enumerate(self.proxy.models)]
        if self.proxy.out_of_scope.model is not None:
            refs.append(("proxy.out_of_scope.model", self.proxy.out_of_scope.model))
        for where, ref in refs:
            if ref.provider not in self.providers:
                raise ValueError(f"{where}.provider: {ref.provider!r} is not configured; "
                                 f"known providers: {sorted(self.providers)}")
            if ref.model not in self.prices:
                raise ValueError(f"{where}.model: {ref.model!r} has no price in `prices`; add its "
                                 "input/output price per million tokens (0 for a self-hosted model)")
        return self

    def state_limits(self) -> StateLimits:
        """What the state enforces. A reservation, a running approval or a breaker probe is presumed
        dead after ``hold_s``: longer than any one step (``dispatch_timeout_s``) or call (a model's
        ``timeout_s``) can take, plus a minute."""
        hold_s = max([self.dispatch_timeout_s, *(r.timeout_s for r in self.model_refs())]) + 60.0
        return StateLimits(budgets=self.budgets, approval_ttl_s=self.approval_ttl_s,
                           max_pending_approvals=self.max_pending_approvals,
                           max_pending_approvals_per_session=self.max_pending_approvals_per_session,
                           hold_s=hold_s, breaker=self.breaker)

    def model_refs(self) -> list[ModelRef]:
        """Every model the file names: the chat stage's first (defaults, overrides, fallbacks), then the
        proxy's own, then the other stages'. Repeats included."""
        stages: list[Stage] = ["chat", *(s for s in STAGES if s != "chat")]
        refs: list[ModelRef] = []
        for stage in stages:
            refs += [r for r in (self.defaults.get(stage),) if r is not None]
            refs += [o[stage] for o in self.overrides.values() if stage in o]
            refs += self.fallbacks.get(stage, [])
            if stage == "chat":
                refs += self.proxy.models
                refs += [r for r in (self.proxy.out_of_scope.model,) if r is not None]
        return refs

    def chain(self, skill: str, stage: Stage) -> list[ModelRef]:
        """The primary model for this skill and stage, then the stage's fallbacks, without repeats."""
        primary = self.overrides.get(skill, {}).get(stage, self.defaults[stage])
        seen, out = set(), []
        for ref in [primary, *self.fallbacks.get(stage, [])]:
            if ref.key not in seen:
                seen.add(ref.key)
                out.append(ref)
        return out


# Merged per entry (a stage, a provider, a model): a user's file names only what it changes.
_PER_ENTRY = ("defaults", "fallbacks", "providers", "prices")


def _merge(shipped: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """User keys win. ``_PER_ENTRY`` sections merge per entry: a stage's default model or fallback list,
    a provider or a price given by the user replaces the shipped one whole; the others are kept."""
    merged = {**shipped, **user}
    for key in _PER_ENTRY:
        if isinstance(user.get(key), dict):
            merged[key] = {**shipped.get(key, {}), **user[key]}
    return merged


def _read(path: Path) -> dict[str, Any]:
    return read_mapping(path, "model-routing file")


def model_routing_from_dict(data: dict[str, Any], source: str = "<dict>") -> ModelRoutingConfig:
    try:
        return ModelRoutingConfig.model_validate(_merge(_read(SHIPPED), data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"model-routing file {source}")) from exc


def load_model_routing(path: str | Path | None = None) -> ModelRoutingConfig:
    """The shipped model-routing file, or ``path`` merged over it."""
    if path is None:
        return model_routing_from_dict({}, str(SHIPPED))
    return model_routing_from_dict(_read(Path(path)), repr(str(path)))
