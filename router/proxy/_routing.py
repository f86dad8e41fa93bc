"""Which models answer a proxied chat turn: a ``Route`` from the request's ``model`` and its session.

``model: "auto"`` classifies the last user message (through the ``classify`` callable: the HTTP service
passes its ``classify_one``, so the micro-batcher and the metrics see it). The Decision's skill (the
intent's ``skill``, else the intent's name) picks the chain of the model-routing file's ``chat`` stage:
``overrides.<skill>.chat``, else ``defaults.chat``, then ``fallbacks.chat``. An out-of-scope turn gets
``proxy.out_of_scope``: a refusal (no model call) or one model. An unsure (escalated) turn goes by its
top candidate (``proxy.escalated: best``) or as out of scope. With ``proxy.context_turns`` N > 0, an
unsure last message is classified again joined with up to N earlier user turns; the joined Decision is
taken when it is sure. Sticky sessions (``_sticky.py``) may then keep a short follow-up on its
session's last confident intent.

A concrete model name passes through to that model alone (no fallback): a model id, or
``provider/model``, of any model the file names (``ModelRoutingConfig.model_refs``). A model named only
by a non-chat stage runs with the chat stage's ``timeout_s`` and ``max_tokens`` (the routing stage's
64-token cap is no chat answer's). Anything else is ``UnknownModel`` (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from router._decision import Decision
from router.dispatch._config import ModelRef, ModelRoutingConfig
from router.errors import UnknownModel
from router.proxy._request import ProxyRequest
from router.proxy._sticky import Remembered, StickyStore

AUTO = "auto"
Classify = Callable[[str], Awaitable[Decision]]
ChainFor = Callable[[str], list[ModelRef]]


@dataclass(frozen=True)
class Route:
    """``kind``: auto (classified), model (named by the client) or refusal (answered with ``refusal``, no
    model). ``tier``: the Decision's tier, ``sticky`` when the session's intent was kept, ``model`` for a
    named model. ``skill``: the key of the chat chain (None for a named model or a refusal)."""

    kind: Literal["auto", "model", "refusal"]
    chain: tuple[ModelRef, ...]
    tier: str
    decision: Decision | None = None
    intent: str | None = None
    skill: str | None = None
    sticky: bool = False
    out_of_scope: bool = False
    refusal: str | None = None


def served_models(config: ModelRoutingConfig) -> dict[str, ModelRef]:
    """Every name a client may give, to its model: ``provider/model`` for each, and the bare model id of
    the first provider naming it. Models of non-chat stages take the chat stage's bounds."""
    chat = config.defaults["chat"]
    names: dict[str, ModelRef] = {}
    chat_keys = {r.key for r in _chat_refs(config)}
    for ref in config.model_refs():
        if ref.key in names:
            continue
        if ref.key not in chat_keys:
            ref = ref.model_copy(update={"timeout_s": chat.timeout_s, "max_tokens": chat.max_tokens})
        names[ref.key] = ref
        names.setdefault(ref.model, ref)
    return names


def model_ids(config: ModelRoutingConfig) -> list[str]:
    """What ``GET /v1/models`` lists after ``auto``: each model id once, ``provider/model`` where the same id is
    served by a second provider."""
    out: list[str] = []
    models = served_models(config)
    for name, ref in models.items():
        if "/" in name and models.get(ref.model) is not None and models[ref.model].key != ref.key:
            out.append(name)
        elif "/" not in name:
            out.append(name)
    return out


def _chat_refs(config: ModelRoutingConfig) -> list[ModelRef]:
    proxy = config.proxy
    return [config.defaults["chat"], *(o["chat"] for o in config.overrides.values() if "chat" in o),
            *config.fallbacks.get("chat", []), *proxy.models,
            *([proxy.out_of_scope.model] if proxy.out_of_scope.model is not None else [])]


def _confident(decision: Decision) -> bool:
    return decision.accepted


def _words(text: str) -> int:
    return len(text.split())


class ChatRouter:
    """Routes proxied turns. ``chain_for(skill)``: the chat chain of a skill (the dispatcher's, so that a
    failover drill applies); ``sticky``: the sessions' remembered intents (None: off)."""

    def __init__(self, config: ModelRoutingConfig, classify: Classify, chain_for: ChainFor,
                 sticky: StickyStore | None = None, max_text_chars: int | None = None) -> None:
        self.config, self.proxy = config, config.proxy
        self.classify, self.chain_for, self.sticky = classify, chain_for, sticky
        self.max_text_chars = max_text_chars
        self.models = served_models(config)

    def model_ids(self) -> list[str]:
        return [AUTO, *model_ids(self.config)]

    async def route(self, request: ProxyRequest, session: str | None) -> Route:
        """``session``: the client's own session id (header or user), None when it gave none: only then
        are sticky sessions used."""
        if request.model != AUTO:
            ref = self.models.get(request.model)
            if ref is None:
                raise UnknownModel(request.model, self.model_ids())
            return Route("model", (ref,), "model")
        text = request.user_texts[-1]
        decision = await self._decide(request.user_texts)
        remembered = None
        if not _confident(decision):
            remembered = await self._remembered(session, text)
        if remembered is not None:
            return Route("auto", tuple(self.chain_for(remembered.skill)), "sticky", decision, remembered.intent,
                         remembered.skill, sticky=True)
        if _confident(decision) and self.sticky is not None and session is not None:
            assert decision.intent is not None
            await self.sticky.put(session, Remembered(decision.intent, self._skill(decision)))
        unsure = decision.escalate and not decision.out_of_scope and decision.intent is not None
        if decision.out_of_scope or decision.intent is None or (unsure and self.proxy.escalated == "out_of_scope"):
            return self._out_of_scope(decision)
        skill = self._skill(decision)
        return Route("auto", tuple(self.chain_for(skill)), decision.tier, decision, decision.intent, skill)

    @staticmethod
    def _skill(decision: Decision) -> str:
        return decision.skill or decision.intent or ""

    async def _decide(self, texts: tuple[str, ...]) -> Decision:
        decision = await self.classify(texts[-1])
        turns = self.proxy.context_turns
        if turns == 0 or _confident(decision) or len(texts) < 2:
            return decision
        joined = texts[-1]
        for earlier in reversed(texts[-turns - 1:-1]):  # the nearest turns first, while they fit the limit
            longer = f"{earlier}\n{joined}"
            if self.max_text_chars is not None and len(longer) > self.max_text_chars:
                break
            joined = longer
        if joined == texts[-1]:
            return decision
        with_context = await self.classify(joined)
        return with_context if _confident(with_context) else decision

    async def _remembered(self, session: str | None, text: str) -> Remembered | None:
        sticky = self.proxy.sticky
        if self.sticky is None or session is None or _words(text) > sticky.max_words:
            return None
        return await self.sticky.get(session)

    def _out_of_scope(self, decision: Decision) -> Route:
        # No intent: an unsure turn answered as out of scope is not its best guess's (the Decision keeps that).
        target = self.proxy.out_of_scope
        if target.model is not None:
            return Route("auto", (target.model,), decision.tier, decision, None, None, out_of_scope=True)
        return Route("refusal", (), decision.tier, decision, None, None, out_of_scope=True, refusal=target.refusal)
