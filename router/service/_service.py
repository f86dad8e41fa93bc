"""The service layer: a Router behind micro-batching, readiness, drain state and index reload. No HTTP here.

The service classifies only through the Router's own ``aclassify`` and ``aclassify_many``; it
plugs its micro-batcher in as the Router's compute runner, so that the compute tiers (the
encoder) run on one thread, in fair jobs shared between requests.

``reload`` (SIGHUP, ``POST /v1/admin/reload``) opens and warms a new Router beside the serving one,
on other threads than the encoder's and the event loop's, then swaps it in with one assignment on
the loop. A request holds the index it started on to its end: the micro-batcher's jobs carry their
own tier, so even queries queued before the swap run on the old index's encoder. A replaced Router
is closed once the last request holding it is done (a count, not a timer: none is cut, none waits
longer than it must). An index that fails to load or fails its checks is refused and the old one
keeps serving; so is one with other request limits (the HTTP schema states the ones of the start).
Reloads run one at a time; a second one waits for the first.

Each Router has its Learner (router/learn/), loaded with it (it replays the learned-examples log): its
worker starts with the service and after each reload's swap, and stops when its Router is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from router._artifact import IndexManifest
from router._config import EncoderConfig
from router._decision import Decision
from router._intents import IntentSet
from router._router import OpenedIndex, Router
from router.errors import ConfigError, RouterError
from router.learn import LearningConfig
from router.service._batcher import MicroBatcher
from router.service._config import ServeConfig
from router.service._metrics import Metrics
from router.service._state import learn_state
from router.tiers import Query, Tier

if TYPE_CHECKING:
    from router.state import State

log = logging.getLogger("router.service")

Job = tuple[Tier, Query]  # a compute tier and one of its pending queries


def serving_encoder(config: ServeConfig, built: EncoderConfig) -> EncoderConfig:
    """The index's own encoder settings with the serving thread count and cache size."""
    # N workers share the cores: by default each gets its share (at most 4), so they do not oversubscribe them.
    threads = config.encoder_threads or max(1, min((os.cpu_count() or 1) // config.workers, 4))
    update: dict[str, int] = {"threads": threads}
    if config.encoder_cache_size is not None:
        update["cache_size"] = config.encoder_cache_size
    return built.model_copy(update=update)


def feedback_on(config: ServeConfig) -> bool | None:
    """Whether the service takes feedback over HTTP: ``--feedback on|off`` as given; ``auto`` (None) is off
    without ``--api-key-env`` (anyone who reaches the port could teach the router) and, with it, the index
    config's ``learning.feedback`` (returned as None)."""
    if config.feedback is None and not config.api_key_env:
        return False
    return config.feedback


def serving_learning(config: ServeConfig, built: LearningConfig) -> LearningConfig:
    """The index config's ``learning`` section with the flags that were given (``--learning``, ``--feedback``,
    ``--learn-log``) over it; feedback off without an API key unless ``--feedback on`` (``feedback_on``)."""
    given = {"mode": config.learning, "feedback": feedback_on(config), "log": config.learn_log}
    update = {key: value for key, value in given.items() if value is not None}
    return LearningConfig.model_validate({**built.model_dump(), **update}) if update else built


def writes_skills(config: ServeConfig) -> frozenset[str]:
    """The skills of ``--skills`` that write (none without a dispatcher)."""
    if not config.skills:
        return frozenset()
    from router.dispatch import load_registry

    return frozenset(skill.name for skill in load_registry(config.skills) if skill.writes)


def protected_intents(opened: OpenedIndex, writes: Collection[str]) -> frozenset[str]:
    """The intents of ``opened`` whose skill (the intent's ``skill``, else its name: ``Decision.skill``) writes:
    they learn only from ``source="human"``, so no LLM answer teaches the router to take an action."""
    if not writes:
        return frozenset()
    intents = IntentSet.model_validate_json((opened.folder / "intents.json").read_text(encoding="utf-8"))
    return frozenset(i.name for i in intents.intents if (i.skill or i.name) in writes)


def load_router(config: ServeConfig, index: str | None = None, writes: Collection[str] | None = None) -> Router:
    """The Router `router serve` serves: ``index`` (a name under ``index_dir``, or a folder; default the
    configured one) opened once and loaded with the serving encoder settings and a Learner (the index's
    ``learning`` with the serve flags over it; the intents of ``writes`` skills protected: default, those of
    ``--skills``). At start and at each reload."""
    opened = OpenedIndex.open(index or config.index, config.index_dir, static=config.static is not False)
    protected = protected_intents(opened, writes_skills(config) if writes is None else writes)
    return Router.load(opened, encoder=serving_encoder(config, opened.config.encoder), static=config.static,
                       learning=serving_learning(config, opened.config.learning), learn_state=learn_state(config),
                       protected_intents=protected)


@dataclass(frozen=True, slots=True)
class IndexIdentity:
    """Which index is serving: its name, version (the first 12 hex digits of its manifest's sha256, so
    each build has its own) and build time; ``label`` (``name@version``) is what a classify answer names."""

    name: str
    version: str
    built_at: str
    label: str

    @classmethod
    def of(cls, manifest: IndexManifest) -> IndexIdentity:
        version = manifest.manifest_sha256[:12]
        return cls(manifest.name, version, manifest.built_at, f"{manifest.name}@{version}")

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "built_at": self.built_at}


class ServedIndex:
    """One loaded index in service: its Router (with the service's micro-batcher), its identity, and how
    many requests hold it now. A request holds the ServedIndex it started on, so a reload never changes the
    index under it; a replaced one is closed (``retire``) when the last request holding it lets go."""

    __slots__ = ("index", "router", "users", "_idle", "_stopped")

    def __init__(self, router: Router) -> None:
        self.router = router
        self.index = IndexIdentity.of(router.artifact.manifest)
        self.users = 0
        self._idle: asyncio.Event | None = None  # set once retired: the last user sets it
        self._stopped = False  # the server stops: no more waiting for requests

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self._idle is not None:
            self._idle.set()

    async def retire(self) -> None:
        """Wait for the requests that still hold this index (until ``stop_waiting``), then close its Router
        (tier 2's clients)."""
        if self.users and not self._stopped:
            self._idle = asyncio.Event()
            await self._idle.wait()
        await self.router.aclose()

    def stop_waiting(self) -> None:
        """The server stops: ``retire`` closes the Router now, whatever request still holds it. Not a
        cancel: a retire cancelled inside ``Router.aclose`` would leave it half-closed for good (the Router
        counts itself closed from the start of its aclose, so a second aclose returns at once)."""
        self._stopped = True
        if self._idle is not None:
            self._idle.set()


def _encoder_thread() -> None:
    # FAISS searches on the encoder thread run on that thread alone (OpenMP's thread count is per
    # calling thread). A batch split into small jobs searches once per job, and each search would
    # gather an OpenMP team that, next to ONNX Runtime's threads on a busy machine, waits for a
    # descheduled member: with 64-token jobs that raised a batch's CPU per text from 5.6 to 8.7 ms.
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a core dependency
        return
    faiss.omp_set_num_threads(1)


def _tokens(job: Job) -> int:
    """What a query costs the encoder: its tokens (the static tier has tokenised it), else its
    characters plus the two special tokens, a bound on its tokens."""
    query = job[1]
    return len(query.ids) if query.ids is not None else len(query.text) + 2


def _settle(jobs: Sequence[Job]) -> list[None]:
    """One encoder job: each compute tier settles its own queries (consecutive: a request's come together)."""
    for tier, group in groupby(jobs, key=lambda job: job[0]):
        tier.settle([query for _, query in group])
    return [None] * len(jobs)


class ClassifierService:
    def __init__(self, router: Router, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        # One thread runs the encoder: ONNX Runtime is given its own threads, and batches queue here.
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder", initializer=_encoder_thread)
        # Only queries the inline tiers (rules, static) left pending are micro-batched to the encoder,
        # in jobs of at most batch_max texts and batch_max_tokens, shared fairly between requests.
        self.batcher: MicroBatcher[Job, None] = MicroBatcher(
            _settle, config.batch_window_ms / 1000.0, config.batch_max, self._encoder,
            expected=lambda: self.in_flight, observe=self.metrics.batch_size.observe,
            cost=_tokens, max_cost=config.batch_max_tokens)
        self.serving = self._serve(router)
        # The request limits of the index served at start: the HTTP layer's body model states them, and a
        # reload keeps them (``_check_limits``).
        self.limits = router.limits
        # Reloads one at a time; each runs as a task of its own, so a request that gives up (its deadline)
        # cannot stop one half-way. Retired indexes wait here for their last request.
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retired: dict[ServedIndex, asyncio.Task[None]] = {}  # each with its retire task
        self.in_flight = 0  # requests inside the server under max_in_flight, kept by the Guard middleware
        self.dispatch_in_flight = 0  # the dispatcher's, under max_dispatch_in_flight (probes are in neither)
        self.encoder_warm = False
        self.draining = False
        # The Guard's deadline for a path, with the limits it comes from, where a route needs its own
        # (the dispatch routes set it: dispatch/_serving.py); None: request_timeout_s.
        self.deadline_for: Callable[[str], tuple[float, str] | None] = lambda path: None
        self.state: State | None = None  # the dispatcher's (set by the dispatch routes): readiness reports it
        # The dispatcher's skills that write (set by create_app): a reloaded index protects their intents too.
        self.writes: frozenset[str] | None = None

    @property
    def router(self) -> Router:
        """The Router serving now (a request in flight may still hold the one before a reload)."""
        return self.serving.router

    def _serve(self, router: Router) -> ServedIndex:
        serving = ServedIndex(router.with_compute(self._batched))
        index = serving.index
        self.metrics.set_index(index.name, index.version, index.built_at)
        return serving

    async def _batched(self, tier: Tier, queries: list[Query]) -> None:
        # Not one encoder job for a batch: bounded ones that take turns with other requests'.
        await self.batcher.submit_many([(tier, q) for q in queries])

    async def _on_encoder_thread(self, tier: Tier, queries: list[Query]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._encoder, tier.settle, queries)

    async def start(self) -> None:
        # Tier 2's pooled connections live on this loop, from here to stop(). The warm-up runs on the
        # encoder thread but outside the batcher (and its metrics); it also warms tier 2 (loads its model).
        await self.router.aopen()
        await self.router.with_compute(self._on_encoder_thread).awarm()
        self.encoder_warm = True
        self.batcher.start()
        self._start_learning(self.router)

    def _start_learning(self, router: Router) -> None:
        """Start the Learner's worker (it learns feedback off the request path) and count its applies. The
        Router's close stops it: at stop, and when a reload retires the Router."""
        learner = router.learning
        if learner is not None:
            self.metrics.watch_learner(learner)
            learner.start()

    async def stop(self) -> None:
        self.draining = True
        async with self._reload_lock:  # a reload under way ends first (one queued behind it is refused)
            pass
        await self.batcher.stop()
        self._encoder.shutdown(wait=True)
        await self.router.aclose()
        # Retired indexes still waiting for a request: the server is done with them all. Their retire tasks
        # are let through to their aclose and awaited, not cancelled (ServedIndex.stop_waiting says why);
        # the other tasks are reloads, refused by now (draining) or waiting for the lock: cancelled.
        retired, retiring = list(self._retired), list(self._retired.values())
        for serving in retired:
            serving.stop_waiting()
        others = [task for task in self._tasks if task not in retiring]
        for task in others:
            task.cancel()
        outcomes = await asyncio.gather(*retiring, *others, return_exceptions=True)
        for serving, outcome in zip(retired, outcomes, strict=False):  # the first len(retired) are theirs
            if isinstance(outcome, BaseException):
                log.error("router: closing the replaced index %s failed: %r", serving.index.label, outcome)

    # -- reload ------------------------------------------------------------------------------------
    async def reload(self, index: str | None = None) -> dict[str, Any]:
        """Load ``index`` (default: the configured ``--index``, read from disk again; or another name or
        folder) beside the serving one, warm it, and swap it in. Answers ``{"status": "reloaded", "index",
        "previous", "seconds"}``, or ``{"status": "refused", "detail", "serving"}`` when the index fails to
        load or its checks (IndexLoadError, StaleIndexError, ConfigError, other request limits than the
        served ones): the old index keeps serving."""
        # Shielded: a caller that stops waiting does not stop the reload between its load and its swap.
        return await asyncio.shield(self._spawn(self._reload(index)))

    def schedule_reload(self) -> None:
        """Reload the configured index in the background (SIGHUP); the outcome is logged."""
        self._spawn(self._reload(None))

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)
        return task

    async def _reload(self, index: str | None) -> dict[str, Any]:
        async with self._reload_lock:
            previous = self.serving.index
            started = time.perf_counter()
            try:
                if self.draining:
                    raise RouterError("the server is draining")
                # Reads and hashes, and replays the learned-examples log: off the loop.
                router = await asyncio.to_thread(load_router, self.config, index, self.writes)
                try:
                    self._check_limits(router)
                    # Warmed through the Router's own runner (a worker thread): the encoder thread keeps
                    # serving, and the new encoder's slow first call is paid before it takes traffic.
                    await router.aopen()
                    await router.awarm()
                except BaseException:
                    await router.aclose()
                    raise
            except Exception as exc:  # whatever failed, the serving index stays
                detail = str(exc) if isinstance(exc, RouterError) else f"{type(exc).__name__}: {exc}"
                log.error("router: index reload refused, still serving %s: %s", previous.label, detail)
                return {"status": "refused", "detail": detail, "serving": previous.as_dict()}
            old, self.serving = self.serving, self._serve(router)  # THE swap: new requests get the new index
            self._start_learning(router)
            self._retire(old)
            seconds = round(time.perf_counter() - started, 3)
            log.warning("router: reloaded index %s (was %s, built %s) in %.2f s",
                        self.serving.index.label, previous.label, self.serving.index.built_at, seconds)
            return {"status": "reloaded", "index": self.serving.index.as_dict(), "previous": previous.as_dict(),
                    "seconds": seconds}

    def _check_limits(self, router: Router) -> None:
        """Refuse (``ConfigError``) an index whose request limits differ from the ones served since start:
        the /v1/classify body model, and so the OpenAPI schema clients read, is built from them once."""
        new, served = router.limits, self.limits
        if new == served:
            return
        differ = ", ".join(f"limits.{field}={getattr(new, field)} (serving {getattr(served, field)})"
                           for field in type(new).model_fields if getattr(new, field) != getattr(served, field))
        raise ConfigError(f"index {router.artifact.manifest.name!r} has other request limits: {differ}. The "
                          "/v1/classify schema states the limits the server started with: restart the server to "
                          "serve new limits (a reload keeps them)")

    def _retire(self, old: ServedIndex) -> None:
        self._retired[old] = self._spawn(old.retire())
        self._retired[old].add_done_callback(lambda _: self._retired.pop(old, None))

    # -- readiness ---------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once warm and not draining (and tier 2 reachable when on). With dispatch on, ``state``
        reports the dispatcher's state backend and whether it answers; a state that does not answer
        leaves the process ready, since classify still works and dispatch refuses its own steps (503)."""
        escalator = self.router.escalator
        llm: dict[str, Any] = {"configured": escalator is not None}
        ok = self.encoder_warm and not self.draining
        if escalator is not None:
            llm["status"] = escalator.status
            if escalator.enabled:
                llm["reachable"] = await escalator.ping()
                ok = ok and any(llm["reachable"].values())
        detail = {"index": self.serving.index.as_dict(), "pid": os.getpid(), "encoder_warm": self.encoder_warm,
                  "draining": self.draining, "tiers": self.router.chain.names, "llm": llm}
        if self.state is not None:
            # Reported, never required: with the state (Redis) down, classify still answers and each
            # dispatch step is refused on its own (StateUnavailable, 503), so the process stays ready.
            detail["state"] = {**self.state.describe(), "reachable": await self.state.ping()}
        serving = self.serving
        learner = serving.router.learning
        if learner is not None:
            # O(entries), and the file log's figures may wait on its lock: off the loop, the index held (a
            # reload closes its Learner only after).
            serving.users += 1
            try:
                detail["learning"] = await asyncio.to_thread(learner.stats)
            finally:
                serving.release()
        return ok, detail

    # -- classification ----------------------------------------------------------------------------
    # A text is checked (Router) before it joins a micro-batch: a bad one fails its own request, not its batch.
    async def classify_one(self, text: str) -> Decision:
        return (await self.classify([text], batch=False))[0][0]

    async def classify_many(self, texts: Sequence[str]) -> list[Decision]:
        return (await self.classify(texts, batch=True))[0]

    async def classify(self, texts: Sequence[str], *, batch: bool) -> tuple[list[Decision], IndexIdentity]:
        """The Decisions of ``texts`` (``batch``: as a ``texts`` request, else the one text) and the index
        that made them, held for the call so that a reload closes it only after."""
        serving = self.serving
        serving.users += 1
        try:
            if batch:
                decisions = await serving.router.aclassify_many(texts)
            else:
                decisions = [await serving.router.aclassify(texts[0])]
        finally:
            serving.release()
        self.metrics.record(decisions)
        return decisions, serving.index
