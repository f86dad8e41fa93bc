"""``IntentRouter``: classify the input, then run the Runnable mapped to its intent on the same input.

The route gets the original input unchanged, so any existing chain drops in as a route. The Decision
travels in the route's config metadata (``router_decision``, as ``Decision.to_dict()``: plain JSON, so
tracers can record it) with ``router_route`` (the route key, or ``"fallback"``); ``decision_from(config)``
reads it back. A route key is an intent name or a skill name; the intent's own name wins. Escalated and
out-of-scope queries, and intents without a route, go to ``fallback``, which is required: a query the
router was not sure of must go somewhere the caller chose, never to a guessed route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config, patch_config
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import get_async_callback_manager_for_config, get_callback_manager_for_config

from router._decision import Decision
from router._router import Router, Tiers
from router.errors import ConfigError
from router.langchain._runnable import DecisionRunnable, RouterInput

DECISION_KEY = "router_decision"
ROUTE_KEY = "router_route"
FALLBACK = "fallback"

RouteLike = Runnable[Any, Any] | Callable[..., Any] | Mapping[str, Any]


def decision_from(config: RunnableConfig | None = None) -> Decision | None:
    """The Decision that chose the running route: from ``config``, else from the current run's context.

    None outside a route of an ``IntentRouter``. In a plain function route, ``decision_from()`` alone works
    (LangChain keeps the run's config in a context variable).
    """
    data = ensure_config(config).get("metadata", {}).get(DECISION_KEY)
    return Decision.from_dict(data) if isinstance(data, Mapping) else None


class IntentRouter(Runnable[RouterInput, Any]):
    """Classify the input with ``router``; run ``routes[intent]`` (else ``routes[skill]``) on it, or ``fallback``.

    ``routes`` values and ``fallback`` are Runnables, or anything LangChain coerces to one (a function, a
    dict of Runnables). ``invoke``/``ainvoke``/``batch``/``abatch``/``stream``/``astream`` all classify
    first (a child run tagged ``classify``), then delegate to the chosen Runnable (tagged ``route:<key>``);
    ``stream`` yields the chosen Runnable's own chunks; ``batch`` classifies in one batch and then calls each
    route's ``batch`` once with its inputs. A key that is neither an intent nor a skill of the router's
    index is a ``ConfigError`` here, not a silently dead route.
    """

    def __init__(self, router: Router, routes: Mapping[str, RouteLike], fallback: RouteLike, *, key: str = "text",
                 tiers: Tiers = "all", name: str | None = None) -> None:
        intents = router.artifact.intents.intents
        known = {i.name for i in intents} | {i.skill or i.name for i in intents}
        unknown = sorted(k for k in routes if k not in known)
        if unknown:
            raise ConfigError(f"routes: {', '.join(map(repr, unknown))} is neither an intent nor a skill of index "
                              f"{router.artifact.manifest.name!r}; known: {', '.join(sorted(known))}")
        self.classifier = DecisionRunnable(router, key=key, tiers=tiers)
        self.routes: dict[str, Runnable[Any, Any]] = {k: coerce_to_runnable(r) for k, r in routes.items()}
        self.fallback: Runnable[Any, Any] = coerce_to_runnable(fallback)
        self.name = name or "IntentRouter"

    def __repr__(self) -> str:
        return f"IntentRouter(name={self.name!r}, routes={sorted(self.routes)!r})"

    def route_key(self, decision: Decision) -> str:
        """The route a Decision goes to: its intent's, else its skill's, else ``"fallback"``."""
        if decision.accepted:
            for key in (decision.intent, decision.skill):
                if key is not None and key in self.routes:
                    return key
        return FALLBACK

    def _chosen(self, decision: Decision, config: RunnableConfig,
                run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
                ) -> tuple[str, Runnable[Any, Any], RunnableConfig]:
        """The route key, its Runnable, and its config: the Decision in its metadata, its run tagged."""
        key = self.route_key(decision)
        runnable = self.fallback if key == FALLBACK else self.routes[key]
        metadata = {**config.get("metadata", {}), DECISION_KEY: decision.to_dict(), ROUTE_KEY: key}
        return key, runnable, patch_config({**config, "metadata": metadata},
                                      callbacks=run_manager.get_child(tag=f"route:{key}"))

    # -- one input -----------------------------------------------------------------------------------
    def invoke(self, input: RouterInput, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: RouterInput, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(self, value: RouterInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig,
                **kwargs: Any) -> Any:
        decision = self.classifier.invoke(value, patch_config(config, callbacks=run_manager.get_child("classify")))
        _, runnable, child = self._chosen(decision, config, run_manager)
        return runnable.invoke(value, child, **kwargs)

    async def _ainvoke(self, value: RouterInput, run_manager: AsyncCallbackManagerForChainRun,
                       config: RunnableConfig, **kwargs: Any) -> Any:
        decision = await self.classifier.ainvoke(value, patch_config(config,
                                                                     callbacks=run_manager.get_child("classify")))
        _, runnable, child = self._chosen(decision, config, run_manager)
        return await runnable.ainvoke(value, child, **kwargs)

    # -- many inputs: one classification batch, then one batch per route --------------------------------
    def batch(self, inputs: list[RouterInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any | None) -> list[Any]:
        def run(values: list[RouterInput], run_manager: list[CallbackManagerForChainRun],
                config: list[RunnableConfig]) -> list[Any]:
            decisions = self.classifier.batch(
                values, [patch_config(c, callbacks=m.get_child("classify")) for c, m in zip(config, run_manager,
                                                                                            strict=True)],
                return_exceptions=return_exceptions)
            out: list[Any] = list(decisions)  # a refused input keeps its error; the rest are replaced
            for runnable, picked in self._grouped(decisions, config, run_manager).values():
                results = runnable.batch([values[i] for i, _ in picked], [c for _, c in picked],
                                         return_exceptions=True, **kwargs)
                for (i, _), result in zip(picked, results, strict=True):
                    out[i] = result
            return out

        return self._batch_with_config(run, inputs, config, return_exceptions=return_exceptions)

    async def abatch(self, inputs: list[RouterInput], config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any | None) -> list[Any]:
        async def run(values: list[RouterInput], run_manager: list[AsyncCallbackManagerForChainRun],
                      config: list[RunnableConfig]) -> list[Any]:
            decisions = await self.classifier.abatch(
                values, [patch_config(c, callbacks=m.get_child("classify")) for c, m in zip(config, run_manager,
                                                                                            strict=True)],
                return_exceptions=return_exceptions)
            out: list[Any] = list(decisions)
            for runnable, picked in self._grouped(decisions, config, run_manager).values():
                results = await runnable.abatch([values[i] for i, _ in picked], [c for _, c in picked],
                                                return_exceptions=True, **kwargs)
                for (i, _), result in zip(picked, results, strict=True):
                    out[i] = result
            return out

        return await self._abatch_with_config(run, inputs, config, return_exceptions=return_exceptions)

    def _grouped(self, decisions: Sequence[Decision | Exception], configs: list[RunnableConfig],
                 managers: Sequence[CallbackManagerForChainRun | AsyncCallbackManagerForChainRun],
                 ) -> dict[str, tuple[Runnable[Any, Any], list[tuple[int, RunnableConfig]]]]:
        """Per route key: its Runnable and the (position, config) of each input it gets; a refused input
        (its error in place of a Decision) gets none."""
        groups: dict[str, tuple[Runnable[Any, Any], list[tuple[int, RunnableConfig]]]] = {}
        for i, (decision, config, manager) in enumerate(zip(decisions, configs, managers, strict=True)):
            if isinstance(decision, Exception):
                continue
            key, runnable, child = self._chosen(decision, config, manager)
            groups.setdefault(key, (runnable, []))[1].append((i, child))
        return groups

    # -- streaming: the chosen Runnable's own chunks -----------------------------------------------------
    def stream(self, input: RouterInput, config: RunnableConfig | None = None, **kwargs: Any | None) -> Iterator[Any]:
        config = ensure_config(config)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None))
        final = _Final()
        try:
            decision = self.classifier.invoke(input, patch_config(config,
                                                                  callbacks=run_manager.get_child("classify")))
            _, runnable, child = self._chosen(decision, config, run_manager)
            for chunk in runnable.stream(input, child, **kwargs):
                final.add(chunk)
                yield chunk
        except BaseException as exc:
            run_manager.on_chain_error(exc)
            raise
        run_manager.on_chain_end(final.value)

    async def astream(self, input: RouterInput, config: RunnableConfig | None = None,
                      **kwargs: Any | None) -> AsyncIterator[Any]:
        config = ensure_config(config)
        run_manager = await get_async_callback_manager_for_config(config).on_chain_start(
            None, input, name=config.get("run_name") or self.get_name(), run_id=config.pop("run_id", None))
        final = _Final()
        try:
            decision = await self.classifier.ainvoke(input, patch_config(config,
                                                                         callbacks=run_manager.get_child("classify")))
            _, runnable, child = self._chosen(decision, config, run_manager)
            async for chunk in runnable.astream(input, child, **kwargs):
                final.add(chunk)
                yield chunk
        except BaseException as exc:
            await run_manager.on_chain_error(exc)
            raise
        await run_manager.on_chain_end(final.value)


class _Final:
    """The streamed chunks added up (LangChain's convention: chunks support ``+``), for the run's end event;
    None when they do not add up."""

    def __init__(self) -> None:
        self.value: Any = None
        self._started = self._addable = False

    def add(self, chunk: Any) -> None:
        if not self._started:
            self.value, self._started, self._addable = chunk, True, True
        elif self._addable:
            try:
                self.value = self.value + chunk
            except TypeError:
                self.value, self._addable = None, False


def route_by_intent(router: Router, routes: Mapping[str, RouteLike], fallback: RouteLike, *, key: str = "text",
                    tiers: Tiers = "all", name: str | None = None) -> IntentRouter:
    """An ``IntentRouter``: ``routes`` maps intent (or skill) names to Runnables; ``fallback`` gets the rest."""
    return IntentRouter(router, routes, fallback, key=key, tiers=tiers, name=name)
