"""The ChatProxy: a proxied chat turn routed (``_routing.py``), metered as one step of its session, and
forwarded through the dispatcher's chain (retries, breakers, fallbacks, budgets, cost, trace records)
under the model-routing file's ``chat`` stage.

Sessions: the session header's value, else the body's ``user`` (Anthropic: ``metadata.user_id``), else
``proxy.default_session``; only a session the client named keeps a sticky intent. A refusal (an
out-of-scope turn with ``proxy.out_of_scope.refusal``) is answered with no model call and no step: its
Completion has the refusal text, finish ``stop`` and zero usage.

Streaming: ``stream`` returns once the first event came (``ModelCaller.stream`` tried the chain until a
model answered), so a refusal before the first byte (a budget, every model failing) is raised here and
becomes a proper error response, and ``ProxyStream.headers`` name the model that is answering. Its
``aclose`` ends the upstream request (a client that went away).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from router._decision import Decision
from router.errors import InputError
from router.providers import Completion, Deadline, Usage
from router.providers._base import StreamEnd, StreamEvent, TextDelta
from router.proxy._request import ProxyRequest, WireLimits
from router.proxy._routing import ChatRouter, Route
from router.proxy._sticky import StickyStore, build_sticky

if TYPE_CHECKING:
    from router.dispatch import Dispatcher

REFUSAL_MODEL = "router/refusal"  # x-router-model of an answer no model gave


@dataclass(frozen=True)
class Session:
    """``id``: whose budgets; ``named``: the client gave it (a header or ``user``), not the default."""

    id: str
    named: bool


def _header_value(value: str) -> str:
    # A header carries printable ASCII safely; the rest of an intent or session id (the body's `user` may hold
    # a newline: a header injection) is sent escaped rather than refused.
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in value)


@dataclass
class _Answering:
    """What the headers and the final chunk say: the route, the session, who answered and at what cost."""

    route: Route
    session: Session
    provider: str | None = None
    model: str | None = None
    fallback_from: str | None = None
    cost: Decimal = Decimal(0)

    @property
    def answered_by(self) -> str:
        return REFUSAL_MODEL if self.provider is None else f"{self.provider}/{self.model}"

    @property
    def intent(self) -> str | None:
        if self.route.kind == "model":
            return None
        return "out_of_scope" if self.route.out_of_scope else self.route.intent

    def headers(self, cost: bool = True) -> dict[str, str]:
        """The x-router-* headers; ``cost``: false for a stream, whose cost is known only at its end."""
        out = {"x-router-tier": self.route.tier, "x-router-model": self.answered_by,
               "x-router-session": _header_value(self.session.id)}
        if self.intent is not None:
            out["x-router-intent"] = _header_value(self.intent)
        if cost:
            out["x-router-cost-usd"] = f"{self.cost:f}"
        if self.fallback_from is not None:
            out["x-router-fallback-from"] = self.fallback_from
        return out

    def summary(self) -> dict[str, Any]:
        """The same as JSON: the ``x_router`` object of an OpenAI stream's last chunk."""
        return {"intent": self.intent, "tier": self.route.tier, "model": self.answered_by,
                "fallback_from": self.fallback_from, "session": self.session.id, "cost_usd": float(self.cost)}


@dataclass
class ProxyAnswer(_Answering):
    completion: Completion = field(default_factory=lambda: _refusal_completion(""))


def _refusal_completion(text: str) -> Completion:
    return Completion(text=text, usage=Usage(), model=REFUSAL_MODEL, finish_reason="stop", finish="stop")


class ProxyStream(_Answering):
    """A proxied answer as it comes: iterate its events (the first already came), ``aclose`` to end it.
    ``completion`` and ``cost`` are set once it ended."""

    def __init__(self, route: Route, session: Session, call: Any = None, refusal: str | None = None) -> None:
        super().__init__(route, session)
        self._call = call
        self.completion: Completion | None = None
        if call is not None:
            self.provider, self.model, self.fallback_from = call.provider, call.model, call.fallback_from
        self._refusal = refusal

    async def events(self) -> AsyncIterator[StreamEvent]:
        if self._call is None:
            completion = _refusal_completion(self._refusal or "")
            yield TextDelta(completion.text)
            self.completion = completion
            yield StreamEnd(completion)
            return
        async for event in self._call:
            if isinstance(event, StreamEnd):
                self.completion = event.completion
            yield event
        self.cost = Decimal(self._call.cost)

    async def aclose(self) -> None:
        if self._call is not None:
            await self._call.aclose()
            if self._call.cost is not None:
                self.cost = Decimal(self._call.cost)


def _primary(route: Route) -> str | None:
    """The key a fallback is named after: a skill's chat chain has the stage's configured primary (None: the
    caller's own, which a failover drill leaves out of the chain, so a drill's answers still read as
    fallbacks); a route's own one-model chain (a named model, the out-of-scope model) is its own primary."""
    return None if route.skill is not None else route.chain[0].key


class ChatProxy:
    """``classify``: one text's Decision (the service's micro-batched ``classify_one``, or a Router's
    ``aclassify``); ``max_text_chars``: the longest last user message (the classifier's limit)."""

    def __init__(self, dispatcher: Dispatcher, classify: Callable[[str], Awaitable[Decision]],
                 max_text_chars: int, sticky: StickyStore | None = None) -> None:
        self.dispatcher = dispatcher
        self.config = dispatcher.config.proxy
        self.max_text_chars = max_text_chars
        self.sticky = sticky if sticky is not None else build_sticky(dispatcher.config.state, self.config.sticky)
        self.router = ChatRouter(dispatcher.config, classify, lambda skill: dispatcher.caller.chain(skill, "chat"),
                                 self.sticky, max_text_chars)

    @property
    def limits(self) -> WireLimits:
        return WireLimits(max_text_chars=self.max_text_chars, max_messages=self.config.max_messages,
                          max_tools=self.config.max_tools)

    def model_ids(self) -> list[str]:
        return self.router.model_ids()

    def session(self, header: str | None, user: str | None) -> Session:
        for given in (header, user):
            if given is not None and given.strip():
                if len(given) > 256:
                    raise InputError(f"session: {len(given)} characters is over 256 (the session header or user)")
                return Session(given, True)
        return Session(self.config.default_session, False)

    async def routed(self, request: ProxyRequest, header: str | None = None) -> tuple[Route, Session]:
        """The route and the session of a request (``header``: the session header's value, if any)."""
        session = self.session(header, request.user)
        route = await self.router.route(request, session.id if session.named else None)
        return route, session

    def _skill(self, route: Route) -> str:
        return route.skill or ("out_of_scope" if route.out_of_scope else "model")

    async def complete(self, request: ProxyRequest, header: str | None = None,
                       routed: tuple[Route, Session] | None = None) -> ProxyAnswer:
        """``routed``: what ``routed`` gave, when the caller needed the route first."""
        route, session = routed if routed is not None else await self.routed(request, header)
        if route.kind == "refusal":
            return ProxyAnswer(route, session, completion=_refusal_completion(route.refusal or ""))
        await self.dispatcher.state.budgets.step(session.id)
        # The chain's models share dispatch_timeout_s (router/dispatch/_deadline.py), so that a fallback is still
        # tried within the route's deadline (request_timeout_s + dispatch_timeout_s).
        call = await self.dispatcher.caller.call(stage="chat", skill=self._skill(route), session=session.id,
                                                 request=request.request, chain=list(route.chain),
                                                 deadline=Deadline(self.dispatcher.config.dispatch_timeout_s),
                                                 primary=_primary(route))
        return ProxyAnswer(route, session, call.provider, call.model, call.fallback_from, call.cost,
                           completion=call.completion)

    async def stream(self, request: ProxyRequest, header: str | None = None,
                     routed: tuple[Route, Session] | None = None) -> ProxyStream:
        route, session = routed if routed is not None else await self.routed(request, header)
        if route.kind == "refusal":
            return ProxyStream(route, session, refusal=route.refusal)
        await self.dispatcher.state.budgets.step(session.id)
        # The deadline bounds the wait for the first event (each model's within its slot); a started stream's
        # gaps are bounded by its model's timeout_s.
        call = await self.dispatcher.caller.stream(stage="chat", skill=self._skill(route), session=session.id,
                                                   request=request.request, chain=list(route.chain),
                                                   deadline=Deadline(self.dispatcher.config.dispatch_timeout_s),
                                                   primary=_primary(route))
        try:
            return ProxyStream(route, session, call)
        except BaseException:  # an opened stream nobody holds would keep its slot, reservation and probe
            await call.aclose()
            raise

    async def aclose(self) -> None:
        if self.sticky is not None:
            await self.sticky.aclose()

