"""The Router: a built index and the chain of tiers over it (rules, static, embedding, llm).

One way in: ``classify`` and ``classify_many`` (sync), ``aclassify`` and ``aclassify_many``
(async), each with ``tiers="all"`` or ``"local"`` (tiers 0-1: tier 2 never runs, and an escalated
Decision keeps ``escalate=True`` for the caller). Tier 2 is async: the sync path reaches it
through the Router's one ``SyncBridge``; the async path awaits it on the caller's loop.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from router import _telemetry
from router._artifact import IndexArtifact, IndexManifest, check_fresh, load_artifact, open_index
from router._config import EncoderConfig, LimitsConfig, RouterConfig, load_config
from router._decision import Decision
from router._intents import IntentSet
from router._paths import indexes_dir
from router._sources import resolve_sources
from router._sync import Lifecycle, SyncBridge
from router._validation import check_batch, check_text
from router.encoders import Encoder, build_encoder, build_tuned_encoder, encoder_identity
from router.errors import ConfigError, IndexLoadError, InputError
from router.llm._config import LLMConfig
from router.llm._gate import gate_status
from router.tiers import ALL_KINDS, COMPUTE, LOCAL, Chain, Query, TierContext, TierKind, build_chain
from router.tiers._chain import ComputeRunner, on_a_thread
from router.train import check_tuned

if TYPE_CHECKING:
    from router.learn import LearningConfig
    from router.learn._learner import ApplyReport, Learner, LearnResult
    from router.llm._escalator import Escalator
    from router.providers import Provider
    from router.state import StateConfig

Tiers = Literal["all", "local"]
_KINDS: dict[str, tuple[TierKind, ...]] = {"all": ALL_KINDS, "local": LOCAL}


def _kinds(tiers: object) -> tuple[TierKind, ...]:
    kinds = _KINDS.get(tiers) if isinstance(tiers, str) else None
    if kinds is None:
        raise InputError(f"tiers={tiers!r}: expected 'all' (every tier) or 'local' (tiers 0-1, never tier 2)")
    return kinds


def index_folder(index: str | Path, index_dir: str | Path | None = None) -> Path:
    """An index by folder path, or by name under ``indexes/``."""
    return Path(index) if Path(index).is_dir() or "/" in str(index) else indexes_dir(index_dir) / str(index)


def built_config(folder: Path) -> RouterConfig:
    """The config an index was built with (its ``config.json``); ``IndexLoadError`` when missing or invalid."""
    path = folder / "config.json"
    try:
        return RouterConfig.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise IndexLoadError(f"index {folder} is incomplete or corrupt: config.json is missing; rebuild it with: "
                             f"router build --name {folder.name}") from None
    except (OSError, ValueError) as exc:  # a pydantic ValidationError (bad JSON too) is a ValueError
        raise IndexLoadError(f"index {folder} is incomplete or corrupt: config.json is not a valid config ({exc}); "
                             f"rebuild it with: router build --name {folder.name}") from exc


@dataclass(frozen=True)
class OpenedIndex:
    """An index opened once: the generation its name points to, its verified manifest and the config it
    was built with. Every later step of a load reads from it, so each file is read once."""

    folder: Path
    manifest: IndexManifest
    config: RouterConfig
    static: bool  # whether the static table was verified too
    path: Path  # the index as named (``indexes/default``): its learned-examples log lives beside it

    @classmethod
    def open(cls, index: str | Path, index_dir: str | Path | None = None, static: bool = True) -> OpenedIndex:
        path = index_folder(index, index_dir)
        folder, manifest = open_index(path, static=static)
        return cls(folder, manifest, built_config(folder), static, path)


@dataclass(frozen=True, slots=True)
class Live:
    """What a Router serves now: the index state and the chain of tiers over it. Learning swaps both in one
    assignment (``Router._install``); a call reads it once, so it runs on one state from start to end."""

    artifact: IndexArtifact
    chain: Chain


class _Cell:
    """The one place a Router and its ``with_compute`` twins read the live state from."""

    __slots__ = ("live",)

    def __init__(self, live: Live) -> None:
        self.live = live


class Router(Lifecycle):
    """Classify texts into intents. Build one with ``Router.load`` or ``Router.from_config``."""

    def __init__(
        self,
        artifact: IndexArtifact,
        encoder: Encoder,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        escalator: Escalator | None = None,
        compute: ComputeRunner = on_a_thread,
    ) -> None:
        self.escalator = escalator
        self.encoder = encoder
        self.limits = limits or artifact.config.limits
        # Tier 2 offers its own top_k candidates, so the Decision carries at least that many.
        wanted = max(top_k or artifact.config.top_k, escalator.config.top_k if escalator is not None else 0)
        self.top_k = min(wanted, len(artifact.head_intents))
        # The one intent -> skill map: the intent's own skill when its file sets one, else its name.
        self._skills: dict[str, str | None] = {i.name: i.skill or i.name for i in artifact.intents.intents}
        self._cell = _Cell(Live(artifact, build_chain(TierContext(artifact, encoder, escalator, self._skills,
                                                                  self.top_k))))
        self.learning: Learner | None = None  # set by ``load`` unless learning="off" (router/learn/)
        self.compute = compute  # how the async path runs compute tiers (the service: its micro-batcher)
        self._bridge = SyncBridge()  # the sync path's way to tier 2, started on its first use
        self._closed = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        index: str | Path | OpenedIndex = "default",
        *,
        index_dir: str | Path | None = None,
        encoder: EncoderConfig | None = None,
        intents: IntentSet | None = None,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        llm: LLMConfig | Literal["built", "off"] = "built",
        providers: Mapping[str, Provider] | None = None,
        static: bool | None = None,
        learning: LearningConfig | Literal["built", "off"] = "built",
        learn_state: StateConfig | None = None,
        protected_intents: Collection[str] = (),
    ) -> Router:
        """Load a built index by name (under ``indexes/``), by folder path, or as already opened.

        ``encoder`` overrides serving settings (threads, cache); its model must be the one the
        index was built with. Passing ``intents`` also checks the index was built from them.
        ``llm`` is tier 2: the config the index was built with (``"built"``, none unless it had
        an ``llm`` section), another ``LLMConfig``, or ``"off"``. ``providers`` (backend label
        → ``router.providers.Provider``) replaces those the config would build (tests, custom
        backends). ``static`` switches tier 1a (the static token table): None serves it when the
        index has one, False skips it, True requires it. ``learning``: learning from feedback
        (router/learn/): the index config's ``learning`` section (``"built"``), another
        ``LearningConfig``, or ``"off"``; its log (beside the index, or shared through ``learn_state``, a
        Redis state) is replayed now. ``protected_intents`` learn only from ``source="human"`` (the
        intents of skills that write).
        """
        # ``folder``: the generation the name points to now; every file is read from it, checked first.
        opened = index if isinstance(index, OpenedIndex) else None
        if opened is None or (not opened.static and static is not False):
            where = index if opened is None else opened.folder
            assert not isinstance(where, OpenedIndex)
            opened = OpenedIndex.open(where, index_dir, static=static is not False)
        folder, manifest, built = opened.folder, opened.manifest, opened.config
        enc_config = encoder or built.encoder
        tuned = manifest.finetune
        # A fine-tuned index serves its own graph; the configured encoder must be the one it was built with.
        check_fresh(manifest, encoder_identity(enc_config), intents, folder, tuned)
        if static and manifest.static is None:
            raise ConfigError(f"static=True, but index {folder} was built without the static tier; "
                              f"rebuild it with static.enabled: true (router build --static on)")
        artifact = load_artifact(folder, {"ef_search": built.vector_index.ef_search}, static=static is not False,
                                 verified=manifest, config=built)
        llm_config = built.llm if llm == "built" else None if llm == "off" else llm
        escalator = None
        if llm_config is not None:
            from router.llm._escalator import Escalator

            escalator = Escalator(llm_config, artifact.intents, providers)
            escalator.enabled, escalator.status = gate_status(llm_config, manifest.llm_gate)
        served = (build_encoder(enc_config) if tuned is None else
                  build_tuned_encoder(enc_config, folder / tuned.onnx_file, tuned.base_model, manifest.encoder_id,
                                      tuned.tokenizer_sha256))
        router = cls(artifact, served, limits, top_k, escalator)
        learn_config = built.learning if learning == "built" else None if learning == "off" else learning
        if learn_config is not None:
            from router.learn._learner import Learner
            from router.learn._log import build_log

            try:
                router.learning = Learner(router, learn_config, build_log(learn_config, opened.path, learn_state),
                                          protected_intents)
            except BaseException:
                router.close()
                raise
        return router

    @classmethod
    def from_config(cls, path: str | Path, index_dir: str | Path | None = None, static: bool | None = None) -> Router:
        """Load the index a YAML config describes, refusing it if the config's intents have changed."""
        config = load_config(path)
        folder = indexes_dir(index_dir) / config.name
        if not (folder / "manifest.json").is_file():
            raise IndexLoadError(f"no index at {folder} for config {path}; build it with: router build --config {path}")
        served_static = static if static is not None else (None if config.static.enabled else False)
        opened = OpenedIndex.open(folder, static=served_static is not False)
        sources = resolve_sources(config)
        check_tuned(opened.manifest.finetune, config, sources.intents, sources.validation, folder)
        return cls.load(opened, encoder=config.encoder, intents=sources.intents, limits=config.limits,
                        top_k=config.top_k, llm=config.llm or "off", static=served_static, learning=config.learning)

    def with_compute(self, compute: ComputeRunner) -> Router:
        """This router (the same index, tiers and tier 2) with its async path's compute tiers run by
        ``compute``: the HTTP service's micro-batcher plugs in here."""
        twin = copy.copy(self)
        twin.compute = compute
        return twin

    @property
    def artifact(self) -> IndexArtifact:
        """The index state serving now (the built index, plus what was learned since)."""
        return self._cell.live.artifact

    @property
    def chain(self) -> Chain:
        return self._cell.live.chain

    def _install(self, artifact: IndexArtifact) -> None:
        """Serve ``artifact`` (a learned state of the same index) from the next call on: one assignment."""
        chain = build_chain(TierContext(artifact, self.encoder, self.escalator, self._skills, self.top_k))
        self._cell.live = Live(artifact, chain)

    # -- learning ---------------------------------------------------------------------------------------
    def _learner(self) -> Learner:
        if self.learning is None:
            from router.errors import FeedbackNotAllowed

            raise FeedbackNotAllowed("learning is off for this Router (Router.load(..., learning='off'))")
        return self.learning

    def learn(self, text: str, intent: str | None = None, *, out_of_scope: bool = False, source: str = "human",
              override: bool = False, decision_id: str | None = None) -> LearnResult:
        """Teach one example: ``text`` is ``intent``, or out of scope. It is checked, appended to the log beside
        the index (so a restart keeps it) and learned now: the head refit takes seconds on a large index
        (``learn_many`` learns a batch in one). ``status`` says whether it is ``learned`` (served from the
        next call), ``held_out`` (kept for the precision check, never trained on), ``refused`` (the check
        refused the learned state) or ``duplicate``. Raises UnknownIntent, FeedbackConflict (an example
        says otherwise; ``override=True`` with ``source="human"`` replaces it), FeedbackNotAllowed,
        FeedbackRateLimited or InputError."""
        learner = self._learner()
        result = learner.submit(text, intent, out_of_scope=out_of_scope, source=source, override=override,
                                decision_id=decision_id)
        if result.status == "queued":
            learner.wait_applied()
            result.status = "learned" if learner.served(result.id) else "refused"
        return result

    def learn_many(self, items: Iterable[tuple[str, str | None]], *, source: str = "human") -> ApplyReport:
        """Teach many ``(text, intent)`` pairs (intent None: out of scope) and learn them in one refit. Every
        item is checked before any is logged; the first bad one raises and none is taken."""
        learner = self._learner()
        learner.submit_many(list(items), source)
        report = learner.wait_applied()
        assert report is not None
        return report

    @property
    def tier2(self) -> Escalator | None:
        """The escalator when tier 2 is configured and switched on, else None."""
        return self.escalator if self.escalator is not None and self.escalator.enabled else None

    # -- lifecycle ----------------------------------------------------------------------------------
    def warm(self) -> None:
        """Run the compute tiers once (the encoder's first call is slow) and warm tier 2 (load its model,
        fill its prompt cache; best effort), so that the first query pays for neither."""
        self.chain.run(self.chain.start(["warm up the encoder"]), COMPUTE)
        if self.tier2 is not None:
            self._bridge.call(self.tier2.warm)

    async def awarm(self) -> None:
        """``warm`` on the caller's loop: the compute tiers through ``compute``, tier 2 awaited."""
        await self.chain.arun(self.chain.start(["warm up the encoder"]), COMPUTE, self.compute)
        if self.tier2 is not None:
            await self.tier2.warm()

    def close(self) -> None:
        """Release tier 2's connections and model; tier 2 is unusable afterwards. From async code, use ``aclose``."""
        if self._closed:
            return
        self._closed = True
        if self.learning is not None:
            self.learning.close()
        escalator = self.escalator
        if escalator is None:
            self._bridge.close()
        elif self._bridge.running:  # its clients live on the bridge's loop: close them there
            self._bridge.close(last=escalator.aclose)
        else:
            _run_to_end(escalator.aclose())

    async def aclose(self) -> None:
        """Release tier 2's connections and model, on this loop (and on the sync bridge's, if it ran)."""
        if self._closed:
            return
        self._closed = True
        if self.learning is not None:
            await asyncio.to_thread(self.learning.close)  # waits for an apply under way
        escalator = self.escalator
        if self._bridge.running:
            await asyncio.to_thread(self._bridge.close, None if escalator is None else escalator.aclose)
        if escalator is not None:
            await escalator.aclose()

    async def aopen(self) -> None:
        """Open tier 2's pooled connections on the running loop now rather than on its first call (the HTTP
        service does it in its lifespan); ``aclose`` closes them, and so does the loop's own shutdown."""
        if self.escalator is not None:
            await self.escalator.aopen()

    # -- classification -----------------------------------------------------------------------------
    # One query is a batch of one. Texts are checked before any tier runs: a bad text fails its own call.
    def classify(self, text: str, *, tiers: Tiers = "all") -> Decision:
        """One text's Decision; ``tiers="local"``: tiers 0-1 only."""
        kinds = _kinds(tiers)
        return self._decide(self.chain.start([check_text(text, self.limits.max_text_chars)]), kinds)[0]

    def classify_many(self, texts: Sequence[str], *, tiers: Tiers = "all") -> list[Decision]:
        """One Decision per text, in order; ``tiers="local"``: tiers 0-1 only."""
        kinds = _kinds(tiers)
        return self._decide(self.chain.start(check_batch(texts, self.limits.max_batch, self.limits.max_text_chars)),
                            kinds)

    async def aclassify(self, text: str, *, tiers: Tiers = "all") -> Decision:
        """``classify`` on the caller's loop: inline tiers on it, compute tiers through ``compute``."""
        kinds = _kinds(tiers)
        return (await self._adecide(self.chain.start([check_text(text, self.limits.max_text_chars)]), kinds))[0]

    async def aclassify_many(self, texts: Sequence[str], *, tiers: Tiers = "all") -> list[Decision]:
        """``classify_many`` on the caller's loop; a whole batch's inline tiers can take ms: off the loop."""
        kinds = _kinds(tiers)
        queries = self.chain.start(check_batch(texts, self.limits.max_batch, self.limits.max_text_chars))
        return await self._adecide(queries, kinds, inline_off_loop=True)

    # Telemetry off (``router._telemetry``): one test, then the chain as ever. On: a ``router.classify``
    # span around the chain, one child span per tier that runs.
    # A call reads the live state once: a learned state swapped in meanwhile serves the next call.
    def _decide(self, queries: list[Query], kinds: tuple[TierKind, ...]) -> list[Decision]:
        live = self._cell.live
        if _telemetry.tracer is None:
            live.chain.run(queries, kinds, self._bridge)
            return self._offered(queries, live.chain.finish(queries))
        with _telemetry.classify_span(live.artifact.manifest, queries) as span:
            live.chain.run(queries, kinds, self._bridge, traced=True)
            return self._offered(queries, _telemetry.decided(span, live.chain.finish(queries)))

    async def _adecide(self, queries: list[Query], kinds: tuple[TierKind, ...],
                       inline_off_loop: bool = False) -> list[Decision]:
        live = self._cell.live
        if _telemetry.tracer is None:
            await live.chain.arun(queries, kinds, self.compute, inline_off_loop)
            return self._offered(queries, live.chain.finish(queries))
        with _telemetry.classify_span(live.artifact.manifest, queries) as span:
            await live.chain.arun(queries, kinds, self.compute, inline_off_loop, traced=True)
            return self._offered(queries, _telemetry.decided(span, live.chain.finish(queries)))

    def _offered(self, queries: list[Query], decisions: list[Decision]) -> list[Decision]:
        """Tier 2's answers go to the learner when it learns from them (``learning.mode`` review or auto)."""
        learner = self.learning
        if learner is not None and learner.watching:
            for q, decision in zip(queries, decisions, strict=True):
                learner.offer(q.text, decision)
        return decisions


def _run_to_end(coro: Any) -> None:
    """Run a clean-up coroutine from sync code: here when no loop runs in this thread, else on a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="router-close")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
