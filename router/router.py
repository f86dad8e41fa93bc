"""The Router: a built index and the chain of tiers over it (rules, static, embedding, llm)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from router.artifact import IndexArtifact, check_fresh, load_artifact, open_index, read_manifest
from router.config import EncoderConfig, LimitsConfig, RouterConfig, load_config
from router.decision import Decision
from router.encoders import Encoder, build_encoder, build_tuned_encoder, encoder_identity
from router.errors import ConfigError, IndexLoadError
from router.intents import IntentSet
from router.llm.config import LLMConfig
from router.llm.gate import gate_status
from router.paths import indexes_dir
from router.sources import resolve_sources
from router.tiers import TierContext, build_chain
from router.train import check_tuned
from router.validation import check_batch, check_text

if TYPE_CHECKING:
    from router.llm import LLMClient
    from router.llm.escalator import Escalator


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


class Router:
    """Classify texts into intents. Build one with ``Router.load`` or ``Router.from_config``."""

    def __init__(
        self,
        artifact: IndexArtifact,
        encoder: Encoder,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        escalator: Escalator | None = None,
    ) -> None:
        self.artifact = artifact
        self.escalator = escalator
        self.encoder = encoder
        self.limits = limits or artifact.config.limits
        # Tier 2 offers its own top_k candidates, so the Decision carries at least that many.
        wanted = max(top_k or artifact.config.top_k, escalator.config.top_k if escalator is not None else 0)
        self.top_k = min(wanted, len(artifact.head_intents))
        skills = {i.name: i.skill for i in artifact.intents.intents}
        self.chain = build_chain(TierContext(artifact, encoder, escalator, skills, self.top_k))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        index: str | Path = "default",
        *,
        index_dir: str | Path | None = None,
        encoder: EncoderConfig | None = None,
        intents: IntentSet | None = None,
        limits: LimitsConfig | None = None,
        top_k: int | None = None,
        llm: LLMConfig | Literal["built", "off"] = "built",
        llm_clients: Sequence[LLMClient] | None = None,
        static: bool | None = None,
    ) -> Router:
        """Load a built index by name (under ``indexes/``) or by folder path.

        ``encoder`` overrides serving settings (threads, cache); its model must be the one the
        index was built with. Passing ``intents`` also checks the index was built from them.
        ``llm`` is tier 2: the config the index was built with (``"built"``, none unless it had
        an ``llm`` section), another ``LLMConfig``, or ``"off"``. ``llm_clients`` replaces the
        clients the config would build (tests, custom backends). ``static`` switches tier 1a
        (the static token table): None serves it when the index has one, False skips it, True
        requires it.
        """
        # ``folder``: the generation the name points to now; every file is read from it, checked first.
        folder, manifest = open_index(index_folder(index, index_dir), static=static is not False)
        built = built_config(folder)
        enc_config = encoder or built.encoder
        tuned = manifest.finetune
        # A fine-tuned index serves its own graph; the configured encoder must be the one it was built with.
        check_fresh(manifest, encoder_identity(enc_config), intents, folder, tuned)
        if static and manifest.static is None:
            raise ConfigError(f"static=True, but index {folder} was built without the static tier; "
                              f"rebuild it with static.enabled: true (router build --static on)")
        artifact = load_artifact(folder, {"ef_search": built.vector_index.ef_search}, static=static is not False,
                                 verified=manifest)
        llm_config = built.llm if llm == "built" else None if llm == "off" else llm
        escalator = None
        if llm_config is not None:
            from router.llm.escalator import Escalator

            escalator = Escalator(llm_config, artifact.intents, llm_clients)
            escalator.enabled, escalator.status = gate_status(llm_config, manifest.llm_gate)
        served = (build_encoder(enc_config) if tuned is None else
                  build_tuned_encoder(enc_config, folder / tuned.onnx_file, tuned.base_model, manifest.encoder_id,
                                      tuned.tokenizer_sha256))
        return cls(artifact, served, limits, top_k, escalator)

    @classmethod
    def from_config(cls, path: str | Path, index_dir: str | Path | None = None, static: bool | None = None) -> Router:
        """Load the index a YAML config describes, refusing it if the config's intents have changed."""
        config = load_config(path)
        folder = indexes_dir(index_dir) / config.name
        if not (folder / "manifest.json").is_file():
            raise IndexLoadError(f"no index at {folder} for config {path}; build it with: router build --config {path}")
        sources = resolve_sources(config)
        check_tuned(read_manifest(folder).finetune, config, sources.intents, sources.validation, folder)
        return cls.load(folder, encoder=config.encoder, intents=sources.intents,
                        limits=config.limits, top_k=config.top_k, llm=config.llm or "off",
                        static=static if static is not None else (None if config.static.enabled else False))

    @property
    def tier2(self) -> Escalator | None:
        """The escalator when tier 2 is configured and switched on, else None."""
        return self.escalator if self.escalator is not None and self.escalator.enabled else None

    def close(self) -> None:
        """Release tier 2's thread, connections and model; tier 2 is unusable afterwards."""
        if self.escalator is not None:
            self.escalator.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- classification ---------------------------------------------------------------------------
    # One query is a batch of one: one sync path and one async path through the chain of tiers.
    def classify(self, text: str) -> Decision:
        queries = self.chain.start([check_text(text, self.limits.max_text_chars)])
        self.chain.run(queries)
        return self.chain.finish(queries)[0]

    def classify_batch(self, texts: Sequence[str]) -> list[Decision]:
        queries = self.chain.start(check_batch(texts, self.limits.max_batch, self.limits.max_text_chars))
        self.chain.run(queries)
        return self.chain.finish(queries)

    async def aclassify(self, text: str) -> Decision:
        queries = self.chain.start([check_text(text, self.limits.max_text_chars)])
        await self.chain.arun(queries)
        return self.chain.finish(queries)[0]

    async def aclassify_batch(self, texts: Sequence[str]) -> list[Decision]:
        queries = self.chain.start(check_batch(texts, self.limits.max_batch, self.limits.max_text_chars))
        await self.chain.arun(queries)
        return self.chain.finish(queries)
