"""Tier 1a, the static token table: its config, its files and their checks, and how it routes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from router import (
    Builder,
    ConfigError,
    EncoderConfig,
    IndexLoadError,
    Router,
    RouterConfig,
    StaleIndexError,
    load_config,
)
from router._artifact import read_manifest, reseal
from router._cli import main
from router._decision import Candidate, Decision
from router._evaluation import evaluate, score_decisions
from router._intents import read_labelled
from router.encoders import token_encoder
from router.static._model import STATIC_FILE
from router.static._table import WEIGHTINGS, cached_raw_table, load_raw_table
from router.tiers import Chain
from router.tiers._static import StaticTier

FIXTURES = Path(__file__).parent / "fixtures"
OTHER_ENCODER = "minilm-l6-fp32@53aa51172d142c89"

# Queries the mini index's static tier settles (well inside one intent's examples), with that intent.
STATIC_SETTLED = [
    ("what is the balance of my bank account", "balance"),
    ("how do i say thank you in italian", "translate"),
    ("is it going to rain", "weather"),
    ("hello there", "greeting"),
    ("where is my package", "order_status"),
]
# Out-of-scope queries, far from every intent in static space, that it must pass on to the transformer.
PASSED_ON = [
    "who painted the sistine chapel ceiling",
    "what is the capital of france",
    "how to remove a stripped bolt",
    "who invented the internet",
    "can you tell me what credit cards i have open",  # near 'balance' in words, not in meaning
]


def static_leak_bound(target_precision: float, oos_prior: float) -> float:
    """The largest share of out-of-scope queries the static tier can accept while its calibrated
    precision still reaches ``target_precision``.

    The static calibration counts an accepted out-of-scope query as wrong and weights out-of-scope
    queries up to ``oos_prior`` of the traffic. With in-scope coverage a and out-of-scope leak L,
    precision >= p needs prior * L <= (1 - p) * ((1 - prior) * a + prior * L), so
    L <= (1 - p)(1 - prior) a / (prior p) <= (1 - p)(1 - prior) / (prior p): 4.04% at the
    defaults (p = 0.99, prior = 0.2). Any more on held-out data and the static threshold is wrong.
    """
    return (1 - target_precision) * (1 - oos_prior) / (oos_prior * target_precision)


@contextlib.contextmanager
def quiet() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def copy_index(mini_index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(mini_index, copy)
    return copy


def rewrite_static(folder: Path, **changes: np.ndarray) -> None:
    """Rewrite static.npz with some arrays changed and every other one kept."""
    with np.load(folder / STATIC_FILE) as data:
        arrays = {key: data[key] for key in data.files}
    assert set(changes) <= set(arrays)
    arrays.update(changes)
    np.savez(folder / STATIC_FILE, **arrays)


@pytest.fixture(scope="module")
def no_static_index(tmp_path_factory: pytest.TempPathFactory, mini_intents: Path, mini_val: Path) -> Path:
    """The mini index built from the command line with ``--static off``."""
    root = tmp_path_factory.mktemp("no-static")
    with pytest.MonkeyPatch.context() as mp, quiet() as (out, _):
        mp.setenv("ROUTER_INDEX_DIR", str(root))
        code = main(["build", "--intents", str(mini_intents), "--validation", str(mini_val), "--name", "nostatic",
                     "--static", "off"])
    assert code == 0
    printed = out.getvalue()
    assert json.loads(printed[printed.index("{"):])["static"] is None
    return root / "nostatic"


@pytest.fixture(scope="module")
def narrow_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    """The mini index with a 64-wide, idf-weighted static table (both knobs away from their defaults)."""
    config = RouterConfig.model_validate({**mini_config.model_dump(), "static": {"dim": 64, "weighting": "idf"}})
    folder = tmp_path_factory.mktemp("narrow") / "narrow"
    Builder(config).build(folder)
    return folder


# -- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("static", "message"),
    [
        ("dim: 0", r"static\.dim: Input should be greater than 0 \(got 0\)"),
        ("dim: -3", r"static\.dim: Input should be greater than 0 \(got -3\)"),
        ("target_precision: 0", r"static\.target_precision: Input should be greater than 0 \(got 0\)"),
        ("target_precision: 1.5", r"static\.target_precision: Input should be less than or equal to 1 \(got 1\.5\)"),
        ("weighting: tfidf", r"static\.weighting: Input should be 'auto', 'uniform', 'sif' or 'idf' \(got 'tfidf'\)"),
        ("enabled: maybe", r"static\.enabled: .*\(got 'maybe'\)"),
        ("dims: 64", r"unknown key 'static\.dims'"),
    ],
)
def test_bad_static_config_names_key_and_value(tmp_path: Path, static: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"dataset: clinc150\nstatic:\n  {static}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_static_config_accepts_its_bounds(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for weighting in ("auto", *WEIGHTINGS):
        path.write_text(f"dataset: clinc150\nstatic:\n  dim: 1\n  target_precision: 1.0\n  weighting: {weighting}\n")
        static = load_config(path).static
        assert (static.dim, static.target_precision, static.weighting) == (1, 1.0, weighting)
    path.write_text("dataset: clinc150\n")
    default = load_config(path).static
    assert default.enabled and default.dim is None and default.target_precision == 0.99
    assert default.weighting == "auto"


def test_cli_reports_a_bad_static_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: clinc150\nstatic: {dim: -3}\n")
    assert main(["build", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "router: error:" in err and "static.dim" in err and "(got -3)" in err


@pytest.mark.parametrize("command", [["build"], ["eval"], ["serve"]])
def test_cli_static_flag_is_on_or_off(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--static", "maybe"])
    assert info.value.code == 2
    assert "argument --static: invalid choice: 'maybe'" in capsys.readouterr().err


def test_static_dim_wider_than_the_encoder_is_refused(mini_config: RouterConfig, tmp_path: Path) -> None:
    config = RouterConfig.model_validate({**mini_config.model_dump(), "static": {"dim": 385}})
    with pytest.raises(ConfigError, match=r"static\.dim=385 is larger than the encoder's dimension 384 "
                                          r"\(minilm-l6-int8@.*use a value in 1\.\.384"):
        Builder(config).build(tmp_path / "wide")
    assert not (tmp_path / "wide").exists()  # nothing half-built is left behind


def test_static_dim_wider_than_the_encoder_fails_before_encoding(mini_config: RouterConfig, tmp_path: Path) -> None:
    config = RouterConfig.model_validate({**mini_config.model_dump(), "static": {"dim": 385}})
    builder = Builder(config)
    tok = token_encoder(builder.encoder)
    assert tok is not None
    encoded: list[int] = []
    real = tok.encode_ids

    def counting(ids: list[np.ndarray], normalize: bool = True) -> np.ndarray:
        encoded.append(len(ids))
        return real(ids, normalize)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tok, "encode_ids", counting)
        with pytest.raises(ConfigError, match=r"static\.dim=385"):
            builder.build(tmp_path / "wide")
    assert encoded == []


# -- the table's files and their checks ---------------------------------------------------------------


def test_table_from_another_encoder_is_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = copy_index(mini_index, tmp_path)
    own = read_manifest(copy).encoder_id
    rewrite_static(copy, encoder_id=np.array(OTHER_ENCODER))
    with pytest.raises(IndexLoadError, match=r"static\.npz does not match the sha256 in its manifest"):
        Router.load(copy)  # a file changed after the build, whatever is in it
    reseal(copy)  # as if the build itself had written it
    with pytest.raises(StaleIndexError, match=rf"distilled from encoder '{OTHER_ENCODER}', but the index uses "
                                              rf"'{own}'.*--static off"):
        Router.load(copy)
    with pytest.raises(StaleIndexError):
        Router.load(copy, static=True)
    router = Router.load(copy, static=False)  # the transformer tier does not need the table
    assert router.chain.names == ["rules", "embedding"]
    assert router.classify("what is the balance of my bank account").tier == "embedding"


def test_manifest_record_from_another_encoder_is_refused_naming_it(mini_index: Path, tmp_path: Path) -> None:
    copy = copy_index(mini_index, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["static"]["encoder_id"] = OTHER_ENCODER
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match=r"manifest\.json does not match its own sha256"):
        Router.load(copy)  # edited after the build
    reseal(copy)
    with pytest.raises(StaleIndexError, match=OTHER_ENCODER):
        Router.load(copy)


def test_table_changed_after_the_build_is_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = copy_index(mini_index, tmp_path)
    with np.load(copy / STATIC_FILE) as data:
        rows = data["rows"].copy()
    rows[1000, 7] += 0.25  # one value of one token's row
    rewrite_static(copy, rows=rows)
    with pytest.raises(IndexLoadError, match=r"static\.npz does not match the sha256 in its manifest") as info:
        Router.load(copy)
    assert not isinstance(info.value, StaleIndexError)  # corrupt, not stale: same encoder
    assert Router.load(copy, static=False).chain.names == ["rules", "embedding"]


def test_missing_table_is_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = copy_index(mini_index, tmp_path)
    (copy / STATIC_FILE).unlink()
    with pytest.raises(IndexLoadError, match=r"static\.npz is missing \(the manifest records [\d,]+ bytes\)"):
        Router.load(copy)
    assert Router.load(copy, static=False).classify("hello there").intent == "greeting"


def test_raw_table_cache_of_another_encoder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "static-x.npz"
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(path, table=table, encoder_id=np.array(OTHER_ENCODER))
    with pytest.raises(StaleIndexError, match=rf"distilled from encoder '{OTHER_ENCODER}', not 'minilm-l6-fp32@abc'"):
        load_raw_table(path, "minilm-l6-fp32@abc")
    assert np.array_equal(load_raw_table(path, OTHER_ENCODER), table)


def test_the_build_left_the_raw_table_in_the_cache(mini_router: Router) -> None:
    tok = token_encoder(mini_router.encoder)
    assert tok is not None
    raw, hit = cached_raw_table(tok)
    assert hit  # the mini index's build distilled it (or found it): no second distillation
    assert raw.shape == (tok.vocab_size, tok.dimension) and raw.dtype == np.float32


# -- what the manifest records ------------------------------------------------------------------------


def test_manifest_records_the_static_figures(mini_index: Path) -> None:
    m = read_manifest(mini_index)
    st = m.static
    assert st is not None
    assert st.encoder_id == m.encoder_id
    assert (st.vocab, st.dimension) == (30522, 384)
    assert st.weighting in WEIGHTINGS
    assert set(st.weighting_coverage) == set(WEIGHTINGS)  # weighting: auto tried each one
    assert st.weighting_coverage[st.weighting] == max(st.weighting_coverage.values())
    assert st.calibration.fitted and st.calibration.target_precision == 0.99
    built = RouterConfig.model_validate_json((mini_index / "config.json").read_text())
    assert st.tuned == (built.static.tune_epochs > 0)
    assert st.calibration.n_heldout == m.calibration.n_heldout  # the same held-out split
    for figures in (st.end_to_end, st.transformer_only):
        for value in (figures.coverage, figures.precision, figures.oos_recall):
            assert value is not None and 0.0 <= value <= 1.0
    # The end-to-end figures are the joint calibration the transformer tier serves with.
    assert st.end_to_end.coverage == m.calibration.coverage and st.end_to_end.precision == m.calibration.precision
    with np.load(mini_index / STATIC_FILE) as data:
        assert str(data["encoder_id"]) == m.encoder_id
        assert data["rows"].shape == (st.vocab, st.dimension)
    router = Router.load(mini_index, static=True)
    assert router.artifact.static is not None
    assert router.artifact.static.digest() == st.sha256


def test_static_knobs_take_effect(narrow_index: Path) -> None:
    st = read_manifest(narrow_index).static
    assert st is not None
    assert st.dimension == 64 and st.weighting == "idf"
    assert set(st.weighting_coverage) == {"idf"}  # a fixed weighting: nothing else tried
    assert st.weighting_coverage["idf"] == round(st.calibration.coverage or 0.0, 4)
    with np.load(narrow_index / STATIC_FILE) as data:
        assert data["rows"].shape == (st.vocab, 64) and data["examples"].shape[1] == 64
    router = Router.load(narrow_index, static=True)
    assert router.chain.names == ["rules", "static", "embedding"]
    d = router.classify("what is the balance of my bank account")
    assert d.intent == "balance" and d.accepted and "static" in d.latency_us


# -- routing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "intent"), STATIC_SETTLED)
def test_static_tier_settles_confident_in_scope_queries(mini_router: Router, text: str, intent: str) -> None:
    d = mini_router.classify(text)
    assert d.tier == "static" and d.intent == intent
    assert d.accepted and not d.escalate and not d.out_of_scope
    assert set(d.latency_us) == {"rules", "static", "total"}  # no transformer pass
    assert d.skill == {i.name: i.skill or i.name for i in mini_router.artifact.intents.intents}[intent]
    assert len(d.candidates) == mini_router.top_k == 5
    assert len({c.intent for c in d.candidates}) == 5
    scores = [c.score for c in d.candidates]
    assert scores == sorted(scores, reverse=True) and d.candidates[0].intent == intent
    static = mini_router.artifact.manifest.static
    assert static is not None
    cal = static.calibration
    assert d.confidence >= cal.accept_threshold
    assert d.candidates[0].similarity is not None and d.candidates[0].similarity >= cal.oos_similarity_floor


def test_static_candidates_are_sorted_best_first(mini_router: Router) -> None:
    texts = [t for t, lab in zip(*_split("mini_test.jsonl"), strict=True) if lab != "oos"]
    settled = [d for d in mini_router.classify_many(texts) if d.tier == "static"]
    assert len(settled) >= len(texts) // 2
    for d in settled:
        scores = [c.score for c in d.candidates]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True), d
        assert d.candidates[0].intent == d.intent and d.candidates[0].similarity is not None


@pytest.mark.parametrize(("threshold", "floor", "settles"), [
    (0.0, -1.0, True),  # no bar at all: the head's best guess is taken
    (0.0, 1.01, False),  # the out-of-scope floor alone refuses (no similarity reaches it)
    (float("inf"), -1.0, False),  # no threshold reached the target at build time
])
def test_static_tier_applies_its_threshold_and_its_floor(mini_router: Router, threshold: float, floor: float,
                                                         settles: bool) -> None:
    art = mini_router.artifact
    assert art.static is not None and art.manifest.static is not None
    cal = art.manifest.static.calibration.model_copy(update={"accept_threshold": threshold,
                                                             "oos_similarity_floor": floor})
    tok = token_encoder(mini_router.encoder)
    assert tok is not None
    tier = StaticTier(art.static, cal, tok, art.head_intents, {"balance": "banking.balance"}, 3)
    texts = [text for text, _ in STATIC_SETTLED] + PASSED_ON
    queries = Chain.start(texts)
    tier.settle(queries)
    assert all(q.done == settles and q.ids is not None and "static" in q.latency_us for q in queries)
    if settles:
        decisions = Chain.finish(queries)
        assert [d.intent for d in decisions[:len(STATIC_SETTLED)]] == [intent for _, intent in STATIC_SETTLED]
        assert all(d.tier == "static" and d.accepted and len(d.candidates) == 3 for d in decisions)
        assert decisions[0].skill == "banking.balance" and decisions[1].skill is None
    else:
        assert all(q.decision is None for q in queries)  # passed on with no guess: the transformer makes one


def test_balance_query_settled_by_static_has_its_skill(mini_router: Router) -> None:
    d = mini_router.classify("what is the balance of my bank account")
    assert d.tier == "static" and d.skill == "banking.balance"


@pytest.mark.parametrize("text", PASSED_ON)
def test_static_tier_passes_the_others_on_unchanged(mini_router: Router, mini_index: Path, text: str) -> None:
    d = mini_router.classify(text)
    assert d.tier == "embedding"
    assert {"rules", "static", "encode", "embedding"} <= set(d.latency_us)
    # What the transformer decides is what it decides without the static tier in front of it.
    alone = Router.load(mini_index, static=False).classify(text)
    assert (d.intent, d.out_of_scope, d.escalate, d.skill) == (alone.intent, alone.out_of_scope, alone.escalate,
                                                               alone.skill)
    assert d.confidence == pytest.approx(alone.confidence, abs=1e-5)
    assert [c.intent for c in d.candidates] == [c.intent for c in alone.candidates]


def test_ids_reach_the_transformer_through_the_query_cache(mini_router: Router, mini_index: Path) -> None:
    cached = Router.load(mini_index, encoder=EncoderConfig(threads=1, cache_size=16))
    assert cached.chain.names == ["rules", "static", "embedding"]
    expected = [_key(d) for d in mini_router.classify_many(PASSED_ON)]
    assert [_key(cached.classify(t)) for t in PASSED_ON] == expected
    assert [_key(d) for d in cached.classify_many(PASSED_ON)] == expected  # now from the cache
    assert cached.encoder.hits == len(PASSED_ON)  # type: ignore[attr-defined]


def test_token_ids_are_computed_once_and_reused_by_the_transformer(mini_router: Router) -> None:
    tok = token_encoder(mini_router.encoder)
    static, embedding = mini_router.chain.get("static"), mini_router.chain.get("embedding")
    assert tok is not None and static is not None and embedding is not None
    text = "who painted the sistine chapel ceiling"
    queries = Chain.start([text])
    static.settle(queries)
    (q,) = queries
    assert not q.done and q.ids is not None
    assert np.array_equal(q.ids, tok.token_ids([text])[0])
    # The transformer encodes the ids it is handed, not the text: given another text's ids it answers for those.
    q.ids = tok.token_ids(["what is the balance of my bank account"])[0]
    embedding.settle(queries)
    assert q.decision is not None and q.decision.candidates[0].intent == "balance"
    assert mini_router.classify(text).candidates[0].intent != "balance"


BATCH = [
    *(text for text, _ in STATIC_SETTLED),
    *PASSED_ON,
    "please wire 25.50 usd to maria",  # a rule
    "\u200b",  # no tokens at all between [CLS] and [SEP]
    "what is the balance of my bank account",  # a repeat
]


def _key(d: Decision) -> tuple[object, ...]:
    return d.intent, d.tier, d.escalate, d.out_of_scope, d.skill, [c.intent for c in d.candidates]


def test_batch_equals_one_by_one_with_static_on(mini_router: Router) -> None:
    batch = mini_router.classify_many(BATCH)
    singles = [mini_router.classify(t) for t in BATCH]
    assert {d.tier for d in singles} == {"rules", "static", "embedding"}
    assert [_key(d) for d in batch] == [_key(d) for d in singles]
    for a, b in zip(batch, singles, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert ("encode" in a.latency_us) == ("encode" in b.latency_us) == (a.tier == "embedding")


def test_async_equals_sync_with_static_on(mini_router: Router) -> None:
    sync = mini_router.classify_many(BATCH)

    async def both() -> tuple[list[Decision], list[Decision]]:
        one_by_one = [await mini_router.aclassify(t) for t in BATCH]
        return one_by_one, await mini_router.aclassify_many(BATCH)

    one_by_one, batch = asyncio.run(both())
    for decisions in (one_by_one, batch):
        assert [_key(d) for d in decisions] == [_key(d) for d in sync]
        for a, b in zip(decisions, sync, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


# -- the out-of-scope leak --------------------------------------------------------------------------------


def _split(name: str) -> tuple[list[str], list[str]]:
    data = read_labelled(FIXTURES / name)
    return data.texts, data.labels


def test_static_oos_leak_on_the_mini_test_split(mini_router: Router) -> None:
    """The mini test split: 240 in scope, 40 out of scope, none of them seen at build time."""
    r = evaluate(mini_router, read_labelled(FIXTURES / "mini_test.jsonl"))
    n_oos = r["n_test_oos"]
    assert n_oos == 40
    config = mini_router.artifact.config
    bound = static_leak_bound(config.static.target_precision, config.calibration.oos_prior)
    assert bound == pytest.approx(0.0404, abs=1e-4)
    # The bound is a rate; on 40 queries it allows the expected count rounded up: 2 of 40 (5%).
    allowed = math.ceil(bound * n_oos) / n_oos
    assert r["static_oos_leak"] is not None and r["static_oos_leak"] <= allowed
    # The bound means something only if the static tier does real work, and right work: what it accepts
    # is never looked at again, so it must reach at least the pipeline's own target on held-out data.
    assert r["tier_share"]["static"] >= 0.5
    assert r["static_accepted_precision"] is not None
    assert r["static_accepted_precision"] >= config.calibration.target_precision


def _d(intent: str | None, tier: str, *, escalate: bool = False, oos: bool = False) -> Decision:
    return Decision(intent=intent, out_of_scope=oos, confidence=0.9, tier=tier, escalate=escalate,
                    candidates=[Candidate(intent or "a", 0.9)])


def test_eval_static_figures_count_what_the_static_tier_accepted() -> None:
    decisions = [
        _d("a", "static"), _d("b", "static"), _d("a", "static"),  # right, wrong, an out-of-scope leak
        _d("a", "embedding"), _d("b", "embedding", escalate=True),  # accepted by the transformer, escalated
        _d(None, "embedding", oos=True), _d("b", "rules"),  # out of scope, a rule
    ]
    labels = ["a", "a", "oos", "a", "b", "oos", "b"]
    r = score_decisions(decisions, labels, {"a", "b"})
    assert r["static_accepted_precision"] == pytest.approx(1 / 3)
    assert r["static_oos_leak"] == pytest.approx(1 / 2)
    assert r["tier_share"]["static"] == pytest.approx(round(3 / 7, 4))
    assert r["tier_share"]["embedding"] == pytest.approx(round(1 / 7, 4))
    no_static = score_decisions(decisions[3:], labels[3:], {"a", "b"})
    assert no_static["static_accepted_precision"] is None and no_static["static_oos_leak"] == 0.0
    assert no_static["tier_share"]["static"] == 0.0


# -- built with the static tier off ------------------------------------------------------------------------


def test_static_off_build_has_no_table(no_static_index: Path) -> None:
    assert not (no_static_index / STATIC_FILE).exists()
    m = read_manifest(no_static_index)
    assert m.static is None
    assert not RouterConfig.model_validate_json((no_static_index / "config.json").read_text()).static.enabled
    with pytest.raises(ConfigError, match=r"static=True, but index .* was built without the static tier.*--static on"):
        Router.load(no_static_index, static=True)
    router = Router.load(no_static_index)
    assert router.chain.names == ["rules", "embedding"]
    d = router.classify("what is the balance of my bank account")
    assert d.tier == "embedding" and d.intent == "balance" and "static" not in d.latency_us


def test_eval_with_static_off_has_no_static_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code = main(["eval", "--train", str(FIXTURES / "mini_train.csv"), "--val", str(FIXTURES / "mini_val.jsonl"),
                 "--test", str(FIXTURES / "mini_test.jsonl"), "--static", "off", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0
    assert r["static"] is None and r["tier_share"]["static"] == 0.0
    assert r["static_accepted_precision"] is None and r["static_oos_leak"] == 0.0
    assert r["tier_share"]["embedding"] > 0.5 and r["accuracy_full"] > 0.9
