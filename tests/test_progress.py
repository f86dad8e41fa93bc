"""Progress on stderr (router._progress): shown only when asked for and stderr is a terminal, never on stdout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from router import Builder, EncoderConfig, RouterConfig
from router._cli import main
from router._config import VectorIndexConfig
from router._intents import Labelled
from router._progress import QUIET, Bar, Progress, TqdmProgress, make_progress
from router.bench._data import BenchData
from router.bench._runner import run_method
from router.bench._scaling import run_scaling
from router.bench.methods import Outcome
from router.encoders import TokenEncoder
from router.static._table import cached_raw_table

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN, VAL, TEST = FIXTURES / "mini_train.csv", FIXTURES / "mini_val.jsonl", FIXTURES / "mini_test.jsonl"
HASHING = ["--backend", "hashing", "--static", "off"]  # no model file: a build takes well under a second
BUILD_STAGES = ("encode examples", "fit head", "encode validation", "calibrate", "vector index", "write index")


class FakeTTY(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def streams(tty: bool = True) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), FakeTTY() if tty else io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def run_cli(argv: list[str], tty: bool = True) -> tuple[int, str, str]:
    with streams(tty) as (out, err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def build_json(stdout: str) -> dict[str, object]:
    """`router build` prints any mined rules, then one JSON object (then, with tier 2, the gate's verdict)."""
    summary, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])
    assert isinstance(summary, dict)
    return summary


class TinyTokenEncoder:
    """A TokenEncoder over a 64-token hashed vocabulary: the static tier's stages in milliseconds."""

    encoder_id = "tiny-tokens"
    dimension = 16
    vocab_size = 64
    special_ids = ([0], [1])
    batch_size = 4  # with a small ENCODE_CHUNK, the build encodes in several chunks

    def __init__(self) -> None:
        self._rows = np.random.default_rng(0).standard_normal((self.vocab_size, self.dimension)).astype(np.float32)

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array([0, *(2 + zlib.crc32(w.encode()) % 62 for w in t.lower().split()), 1]) for t in texts]

    def encode_ids(self, ids: Sequence[np.ndarray], normalize: bool = True) -> np.ndarray:
        pooled = np.stack([self._rows[row].mean(axis=0) for row in ids]) if len(ids) else np.zeros((0, 16))
        if normalize:
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return np.ascontiguousarray(pooled, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.token_ids(texts))

    def encode_with_ids(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> np.ndarray:
        return self.encode_ids(ids)


# --- the facility itself ---------------------------------------------------------------------------------------


def test_bars_only_when_asked_for_and_on_a_terminal() -> None:
    assert isinstance(make_progress(True, FakeTTY()), TqdmProgress)
    assert make_progress(True, io.StringIO()) is QUIET  # not a terminal
    assert make_progress(False, FakeTTY()) is QUIET
    assert make_progress(None, FakeTTY()) is QUIET
    given = Progress()
    assert make_progress(given) is given
    assert make_progress(True) is QUIET  # pytest captures stderr: not a terminal
    with streams() as (_, err):
        assert make_progress(True).enabled  # sys.stderr as it is at the call
    assert err.getvalue() == ""


def test_the_quiet_one_writes_nothing_and_passes_items_through(capsys: pytest.CaptureFixture[str]) -> None:
    with QUIET.stage("fit head", total=3, unit="epoch") as bar:
        bar.update()
        bar.update_to(3)
        bar.note("note")
    assert list(QUIET.iterate([1, 2, 3], "eval")) == [1, 2, 3]
    QUIET.line("a line")
    assert capsys.readouterr() == ("", "")


def test_stages_show_their_names_and_counts_on_the_stream_only(capsys: pytest.CaptureFixture[str]) -> None:
    stream = FakeTTY()
    progress = make_progress(True, stream)
    with progress.stage("encode examples", total=10, unit="text") as bar:
        bar.update(4)
        bar.update_to(10)
    with progress.stage("write index"):
        pass
    assert list(progress.iterate(range(3), "eval", unit="query")) == [0, 1, 2]
    progress.line("a line")
    text = stream.getvalue()
    for shown in ("encode examples", "10/10", "write index", "eval", "3/3", "a line"):
        assert shown in text
    assert capsys.readouterr() == ("", "")  # neither stdout nor the real stderr


def test_a_terminal_of_unknown_size_still_shows_the_stages() -> None:
    """A pty nobody sized reports 0 x 0; tqdm alone would print empty lines there."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", encoding="utf-8", closefd=False) as stream:
            assert os.get_terminal_size(slave) == (0, 0)
            with contextlib.redirect_stderr(stream):  # tqdm sizes only sys.stderr and sys.stdout itself
                with make_progress(True).stage("fit head", total=3, unit="epoch") as bar:
                    bar.update(3)
            stream.flush()
        shown = b""
        while select.select([master], [], [], 0.5)[0]:  # every write is its own chunk on a pty
            shown += os.read(master, 65536)
        assert "fit head: 100%" in shown.decode()
    finally:
        os.close(slave)
        os.close(master)


def test_a_failing_stage_closes_its_bar() -> None:
    stream = FakeTTY()
    with pytest.raises(RuntimeError), make_progress(True, stream).stage("calibrate", total=5):
        raise RuntimeError("boom")
    assert stream.getvalue().endswith("\n")  # the bar's line is finished, not left open


# --- router build / eval ----------------------------------------------------------------------------------------


def test_build_shows_nothing_when_stderr_is_not_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code = main(["build", "--intents", str(TRAIN), "--validation", str(VAL), "--name", "plain", *HASHING])
    captured = capsys.readouterr()
    assert code == 0 and build_json(captured.out)["n_intents"] == 8
    for stage in BUILD_STAGES:
        assert stage not in captured.err


def test_build_on_a_terminal_shows_its_stages_and_stdout_stays_json(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code, out, err = run_cli(["build", "--intents", str(TRAIN), "--validation", str(VAL), "--name", "tty",
                              "--mine-rules", *HASHING])
    assert code == 0 and build_json(out)["n_examples"] == 160
    for stage in (*BUILD_STAGES, "mine rules"):
        assert stage in err
    assert "160/160" in err and "300/300" in err  # examples encoded, head epochs
    for stage in BUILD_STAGES:
        assert stage not in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_turns_progress_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    build = ["build", "--intents", str(TRAIN), "--validation", str(VAL), "--name", "quiet", *HASHING]
    argv = ["--quiet", *build] if where == "before" else [*build, "-q"]
    code, out, err = run_cli(argv)
    assert code == 0 and build_json(out)["n_intents"] == 8
    assert err == ""


def test_cross_fitted_calibration_counts_its_folds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code, out, err = run_cli(["build", "--intents", str(TRAIN), "--name", "folds", *HASHING])
    assert code == 0 and build_json(out)["calibration"]
    assert "calibrate" in err and "5/5" in err and "encode validation" not in err


def test_eval_shows_the_build_and_a_bar_of_test_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    argv = ["eval", "--train", str(TRAIN), "--val", str(VAL), "--test", str(TEST), "--json", *HASHING]
    code, out, err = run_cli(argv)
    assert code == 0 and json.loads(out)["n_test"] == 280
    assert "encode examples" in err and "eval" in err and "280/280" in err

    code, out, err = run_cli([*argv, "--quiet"])
    assert code == 0 and json.loads(out)["n_test"] == 280 and err == ""
    code, out, err = run_cli(argv, tty=False)
    assert code == 0 and json.loads(out)["n_test"] == 280 and err == ""


def test_build_with_tier2_shows_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code, out, err = run_cli(["build", "--intents", str(TRAIN), "--validation", str(VAL), "--name", "gate",
                              "--llm", "memory", *HASHING])
    assert code == 0 and build_json(out)["llm_gate"]
    assert "tier-2 gate" in err and "query/s" in err  # a bar of the escalated validation queries
    assert "tier-2 gate" not in out[: out.index("{")]


def test_static_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router._builder

    monkeypatch.setattr(router._builder, "ENCODE_CHUNK", 8)  # 2 batches a chunk: the chunked path
    config = RouterConfig(name="tiny", intents=str(TRAIN), validation=str(VAL),
                          encoder=EncoderConfig(models_dir=str(tmp_path / "models")))
    encoder = TinyTokenEncoder()
    assert isinstance(encoder, TokenEncoder)
    stream = FakeTTY()
    report = Builder(config, encoder=encoder, progress=make_progress(True, stream)).build(tmp_path / "index")
    text = stream.getvalue()
    assert report.manifest.static is not None
    for stage in ("encode examples", "160/160", "distil static table", "64/64", "static: choose weighting",
                  "static: tune rows", "static: fit head", "write index"):
        assert stage in text

    # The same build, quiet: the same index (progress changes nothing but stderr).
    quiet = Builder(config, encoder=encoder).build(tmp_path / "quiet")
    assert quiet.manifest.calibration == report.manifest.calibration
    assert quiet.manifest.static is not None and quiet.manifest.static.sha256 == report.manifest.static.sha256


def test_chunked_encoding_gives_the_vectors_of_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build encodes in chunks of whole batches of the length-sorted order, as the ONNX encoder
    batches one call itself: the vectors are bit for bit those of one call."""
    import router._builder
    from router.encoders import build_encoder, token_encoder

    tok = token_encoder(build_encoder(EncoderConfig(model="minilm-l6-int8", threads=1, cache_size=0)))
    assert tok is not None
    monkeypatch.setattr(tok, "batch_size", 8)
    monkeypatch.setattr(router._builder, "ENCODE_CHUNK", 24)
    ids = tok.token_ids([line.split(",")[0] for line in TRAIN.read_text().splitlines()[1:]])
    assert np.array_equal(router._builder._encode_ids(tok, ids, Bar()), tok.encode_ids(ids))


def test_distilling_a_table_shows_a_bar_of_tokens(tmp_path: Path) -> None:
    stream = FakeTTY()
    table, hit = cached_raw_table(TinyTokenEncoder(), tmp_path, progress=make_progress(True, stream))
    assert not hit and table.shape == (64, 16)
    assert "distil static table" in stream.getvalue() and "64/64" in stream.getvalue()
    _, hit = cached_raw_table(TinyTokenEncoder(), tmp_path, progress=make_progress(True, stream := FakeTTY()))
    assert hit and stream.getvalue() == ""  # a cache hit distils nothing


# --- bench compare ----------------------------------------------------------------------------------------------


class EchoMethod:
    name = "echo"
    notes: list[str] = []

    def __init__(self, sample: int | None) -> None:
        self.sample = sample

    def build(self) -> float:
        return 0.0

    def classify(self, text: str) -> Outcome:
        return Outcome(guess=text, accepted=True, confidence=1.0, tier="echo")

    def close(self) -> None:
        return None


def _bench_data(n: int) -> BenchData:
    texts = [f"q{i}" for i in range(n)]
    return BenchData("tiny", Labelled(texts, texts), None, Labelled(texts, texts), np.arange(n))


def test_bench_run_method_keeps_its_line_printer() -> None:
    lines: list[str] = []
    run = run_method(EchoMethod(40), _bench_data(40), lines.append)
    assert run["summary"] and lines == ["tiny: echo: building", "tiny: echo: 20/40", "tiny: echo: 40/40"]


def test_bench_run_method_and_scaling_with_bars(capsys: pytest.CaptureFixture[str]) -> None:
    stream = FakeTTY()
    progress = make_progress(True, stream)
    run_method(EchoMethod(None), _bench_data(30), progress)
    run_scaling([10, 20], VectorIndexConfig(), progress)
    text = stream.getvalue()
    for shown in ("tiny: echo: build", "tiny: echo", "30/30", "scaling", "2/2", "20 vectors"):
        assert shown in text
    assert capsys.readouterr() == ("", "")
