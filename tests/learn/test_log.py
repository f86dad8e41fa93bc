"""The learned-examples log: file (shared by processes, crash safe), memory, and how build_log picks one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from router.errors import ConfigError, LearnLogError
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry
from router.learn._log import LEARN_LOGS, FileLog, LearnLog, MemoryLog, build_log
from router.learn._redis_log import RedisLog
from router.state import StateConfig

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(text: str, intent: str | None = "greet", **fields: object) -> LogEntry:
    return LogEntry.model_validate({"op": "learn", "text": text, "intent": intent, **fields})


def texts(entries: list[LogEntry]) -> list[str]:
    return [e.text for e in entries]


# -- round trip and order --------------------------------------------------------------------------------
def test_every_field_round_trips(tmp_path: Path) -> None:
    full = LogEntry(op="review", id="abc123", at=1712345678.25, text="  Book a Flight ", intent="book_flight",
                    out_of_scope=False, source="llm", heldout=True, override=True, decision_id="d-1",
                    confidence=0.93, review_id="r-9", by="alice")
    oos = LogEntry(op="learn", text="what is the weather on mars", intent=None, out_of_scope=True)
    reject = LogEntry(op="reject", review_id="r-9", by="bob")
    log = FileLog(tmp_path / "x.learned.jsonl")
    log.append([full, oos, reject])
    assert log.read_all() == [full, oos, reject]
    assert FileLog(log.path).read_all() == [full, oos, reject]  # another reader, from the file alone


def test_read_all_keeps_the_order_of_appends(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "log.jsonl")
    assert log.read_all() == []  # no file yet
    log.append([entry("a"), entry("b")])
    log.append([entry("c")])
    log.append([])
    assert texts(log.read_all()) == ["a", "b", "c"]
    assert log.describe() == {"backend": "file", "path": str(log.path), "entries": 3,
                              "bytes": log.path.stat().st_size, "rate_limit": "per process"}


def test_cursor_read_all_then_read_new(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "log.jsonl")
    assert log.read_new() == []
    log.append([entry("a")])
    assert texts(log.read_new()) == ["a"]  # its own appends too
    assert log.read_new() == []
    log.append([entry("b"), entry("c")])
    assert texts(log.read_all()) == ["a", "b", "c"]  # from the start; the cursor moves to the end
    assert log.read_new() == []
    log.append([entry("d")])
    assert texts(log.read_new()) == ["d"]
    log.close()
    assert texts(log.read_new()) == ["a", "b", "c", "d"]  # closed: a fresh reader starts from the start


def test_read_new_tails_what_another_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    reader, writer = FileLog(path), FileLog(path)  # as two processes sharing the file
    assert reader.read_all() == []
    writer.append([entry("a")])
    assert texts(reader.read_new()) == ["a"]
    writer.append([entry("b")])
    reader.append([entry("c")])
    writer.append([entry("d")])
    assert texts(reader.read_new()) == ["b", "c", "d"]
    assert texts(writer.read_new()) == ["a", "b", "c", "d"]
    assert reader.read_new() == writer.read_new() == []


# -- torn and corrupt lines ------------------------------------------------------------------------------
WHOLE_ENTRY = entry("cut").model_dump_json(exclude_defaults=True).encode()


@pytest.mark.parametrize("torn", [b'{"op":"learn","id":"zz","text":"half', b"\x00\x00\x00", WHOLE_ENTRY,
                                  b'{"op":"learn","colour":"red"}'],
                         ids=["half-object", "zeros", "entry-without-its-newline", "newer-field-without-newline"])
def test_a_torn_last_line_is_dropped_and_truncated_away(tmp_path: Path, torn: bytes) -> None:
    """Torn: the last line lacks its newline (the one write of an append was cut short), whatever it holds."""
    path = tmp_path / "log.jsonl"
    log = FileLog(path)
    log.append([entry("a"), entry("b")])
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(torn)
    assert texts(FileLog(path).read_all()) == ["a", "b"]
    assert path.read_bytes() == whole  # truncated under the lock
    log.append([entry("c")])
    assert texts(log.read_new()) == ["a", "b", "c"]
    assert texts(FileLog(path).read_all()) == ["a", "b", "c"]


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = FileLog(path)
    log.append([entry("a")])
    with open(path, "ab") as f:
        f.write(b'{"op":"learn","te')  # a writer killed mid-write, nobody has read since
    log.append([entry("b")])
    assert texts(FileLog(path).read_all()) == ["a", "b"]


def test_a_reader_that_was_tailing_reads_past_a_repaired_tail(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    reader = FileLog(path)
    FileLog(path).append([entry("a")])
    assert texts(reader.read_new()) == ["a"]
    with open(path, "ab") as f:
        f.write(b'{"op":"lea')
    assert reader.read_new() == []
    FileLog(path).append([entry("b")])
    assert texts(reader.read_new()) == ["b"]


BAD_LINES = [
    (b"not json at all\n", "not JSON"),
    (b'{"op":"learn","text":\n', "not JSON"),  # whole (newline and all): not what a crash leaves
    (b'{"op":"bogus","text":"x"}\n', "op: Input should be"),
    (b'{"op":"learn","text":"x","colour":"red"}\n', "colour: Extra inputs are not permitted"),
    (b"[1]\n", "Input should be an object"),
]
BAD_IDS = ["not-json", "half-object-with-newline", "bad-op", "unknown-field", "not-an-object"]


@pytest.mark.parametrize(("bad", "says"), BAD_LINES, ids=BAD_IDS)
@pytest.mark.parametrize("last", [False, True], ids=["before-the-last", "the-last"])
def test_a_bad_whole_line_names_path_line_and_field_and_is_never_truncated(
        tmp_path: Path, bad: bytes, says: str, last: bool) -> None:
    path = tmp_path / "log.jsonl"
    line = entry("a").model_dump_json().encode() + b"\n"
    path.write_bytes(line + bad + (b"" if last else line))
    before = path.read_bytes()
    tailing = FileLog(path)
    for read in (FileLog(path).read_all, FileLog(path).read_new, tailing.read_new, tailing.read_new):
        with pytest.raises(LearnLogError, match=re.escape(f"{path}:2: ")) as caught:
            read()
        assert says in str(caught.value)
        if "JSON" not in says:
            assert "newer version of tiered-router" in str(caught.value)
        assert path.read_bytes() == before  # never truncated nor rewritten
    with pytest.raises(LearnLogError, match=re.escape(f"{path}:2: ")):
        FileLog(path).fold({"anything"})  # a fold rewrites the file: it does not drop what it cannot read
    assert path.read_bytes() == before
    FileLog(path).append([entry("b")])  # an append goes after it, leaving it as it is
    assert path.read_bytes().startswith(before)
    with pytest.raises(LearnLogError, match=re.escape(f"{path}:2: ")):
        FileLog(path).read_all()


def test_a_whole_last_line_from_a_newer_version_is_kept_for_that_version(tmp_path: Path) -> None:
    """An older worker reading a newer one's acknowledged entry (a rolling upgrade) refuses to load, and
    leaves the entry for the newer version to read; nothing is lost."""
    path = tmp_path / "log.jsonl"
    FileLog(path).append([entry("a")])
    newer = b'{"op":"learn","text":"b","intent":"greet","format":2}\n'
    with open(path, "ab") as f:
        f.write(newer)
    before = path.read_bytes()
    with pytest.raises(LearnLogError) as caught:
        FileLog(path).read_all()
    message = str(caught.value)
    assert f"{path}:2: " in message and "format: Extra inputs are not permitted" in message
    assert "newer version of tiered-router" in message
    assert path.read_bytes() == before
    assert path.read_bytes().endswith(newer)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(entry("a").model_dump_json().encode() + b"\n\n" + entry("b").model_dump_json().encode() + b"\n")
    assert texts(FileLog(path).read_all()) == ["a", "b"]


def test_an_unreadable_log_is_a_learn_log_error(tmp_path: Path) -> None:
    path = tmp_path / "folder.jsonl"
    path.mkdir()
    with pytest.raises(LearnLogError, match="folder.jsonl"):
        FileLog(path).read_all()
    with pytest.raises(LearnLogError, match="folder.jsonl"):
        FileLog(path).append([entry("a")])
    with pytest.raises(LearnLogError, match="no-such-folder/log.jsonl: cannot create it"):
        FileLog(tmp_path / "no-such-folder" / "log.jsonl").append([entry("a")])


# -- crash safety ----------------------------------------------------------------------------------------
CHILD = """
import sys
from router.learn._entry import LogEntry
from router.learn._log import FileLog

log = FileLog(sys.argv[1])
run = sys.argv[2]
i = 0
while True:
    log.append([LogEntry(op="learn", text=f"{run}:{i}:" + "x" * 300, intent="greet")])
    i += 1
    print(i, flush=True)  # entry i is durable: append returned
"""


def test_a_writer_killed_with_sigkill_mid_burst_leaves_a_log_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "crash.learned.jsonl"
    reported: dict[str, int] = {}
    for run, kill_after in enumerate((40, 7, 90, 1)):  # each child appends after the last one's kill
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(run)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        durable = 0
        for line in child.stdout:
            durable = int(line)
            if durable >= kill_after:
                break
        child.send_signal(signal.SIGKILL)  # mid-burst: most likely inside the next append
        rest = child.stdout.read()  # what it printed before it died
        child.wait(10)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        reported[str(run)] = max([durable, *(int(n) for n in rest.split())])
        assert reported[str(run)] >= kill_after

        entries = FileLog(path).read_all()  # loads: no LearnLogError
        by_run: dict[str, list[int]] = {}
        for e in entries:
            r, i, pad = e.text.split(":")
            assert pad == "x" * 300 and e.intent == "greet"  # whole
            by_run.setdefault(r, []).append(int(i))
        for r, durable_n in reported.items():
            seq = by_run[r]
            assert seq == list(range(len(seq)))  # in order, no hole, none twice
            assert len(seq) >= durable_n  # nothing acknowledged was lost (at most the one in flight is)
            assert len(seq) <= durable_n + 1
    assert path.read_bytes().endswith(b"\n")


# -- fold ------------------------------------------------------------------------------------------------
def test_fold_removes_exactly_those_ids(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = FileLog(path)
    made = [entry(str(i)) for i in range(10)]
    log.append(made)
    gone = {made[i].id for i in (0, 3, 9)}
    assert log.fold(gone | {"not-there"}) == 3
    assert [e.id for e in FileLog(path).read_all()] == [e.id for e in made if e.id not in gone]
    assert log.fold(gone) == 0
    assert log.fold([]) == 0
    assert FileLog(tmp_path / "none.jsonl").fold({"x"}) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fold_keeps_what_another_writer_appends_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    old = [entry(f"old{i}") for i in range(200)]
    FileLog(path).append(old)
    gone = {e.id for e in old[::2]}
    appended: list[LogEntry] = []
    started = threading.Event()

    def write() -> None:
        other = FileLog(path)  # its own descriptors: flock serialises it with the fold as another process
        for i in range(300):
            one = entry(f"new{i}")
            other.append([one])
            appended.append(one)
            started.set()

    thread = threading.Thread(target=write)
    thread.start()
    started.wait(10)
    folder = FileLog(path)
    assert folder.fold(gone) == 100
    thread.join(30)
    ids = [e.id for e in FileLog(path).read_all()]
    assert ids == [e.id for e in old if e.id not in gone] + [e.id for e in appended]


def test_read_new_after_a_fold_elsewhere_returns_only_the_unseen(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    reader, other = FileLog(path), FileLog(path)
    made = [entry(str(i)) for i in range(6)]
    other.append(made[:4])
    assert texts(reader.read_new()) == ["0", "1", "2", "3"]
    other.append(made[4:])  # not yet read by the reader
    assert other.fold({made[1].id, made[5].id}) == 2  # another file at the path now
    other.append([entry("6")])
    assert texts(reader.read_new()) == ["4", "6"]
    assert reader.read_new() == []
    assert reader.describe()["entries"] == 5
    assert reader.fold({made[0].id}) == 1  # its own fold
    reader.append([entry("7")])
    assert texts(reader.read_new()) == ["7"]
    assert texts(reader.read_all()) == ["2", "3", "4", "6", "7"]


# -- admit -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [FileLog, MemoryLog], ids=["file", "memory"])
def test_admit_limits_each_source_over_a_sliding_window(tmp_path: Path, make: type) -> None:
    clock = Clock()
    log: LearnLog = make(tmp_path / "log.jsonl", clock=clock) if make is FileLog else make(clock=clock)
    for _ in range(3):
        assert log.admit("human", 3) == 0.0  # taken at 1000, 1005, 1010
        clock.now += 5
    clock.now += 5
    assert log.admit("human", 3) == pytest.approx(40.0)  # at 1020 the oldest leaves the window in 40 s
    assert log.admit("llm", 3) == 0.0  # sources are independent
    clock.now += 39
    assert log.admit("human", 3) == pytest.approx(1.0)  # a refusal counts nothing
    clock.now += 1
    assert log.admit("human", 3) == 0.0  # the one taken at 1000 has left
    assert log.admit("human", 3) == pytest.approx(5.0)  # the next to leave: 1005
    clock.now += 60
    assert [log.admit("human", 3, window_s=60.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(60.0)]
    with pytest.raises(ValueError, match="limit=0"):
        log.admit("human", 0)


# -- memory ----------------------------------------------------------------------------------------------
def test_memory_log_keeps_the_same_contract() -> None:
    log = MemoryLog()
    made = [entry(str(i)) for i in range(4)]
    log.append(made[:2])
    assert texts(log.read_all()) == ["0", "1"]
    log.append(made[2:])
    assert log.fold({made[0].id, made[3].id}) == 2
    assert texts(log.read_new()) == ["2"]
    assert log.read_new() == []
    assert log.describe() == {"backend": "memory", "entries": 2}
    assert isinstance(log, LearnLog) and isinstance(FileLog("x"), LearnLog)


# -- build_log -------------------------------------------------------------------------------------------
def test_build_log_is_a_file_beside_the_index_by_default(tmp_path: Path) -> None:
    log = build_log(LearningConfig(), tmp_path / "indexes" / "default")
    assert isinstance(log, FileLog)
    assert log.path == tmp_path / "indexes" / "default.learned.jsonl"
    assert isinstance(build_log(LearningConfig(), tmp_path / "default", StateConfig()), FileLog)  # memory state


def test_build_log_takes_the_configured_path(tmp_path: Path) -> None:
    log = build_log(LearningConfig(log=str(tmp_path / "mine.jsonl")), tmp_path / "default")
    assert isinstance(log, FileLog) and log.path == tmp_path / "mine.jsonl"


def test_build_log_shares_through_redis_with_a_redis_state(tmp_path: Path) -> None:
    state = StateConfig(url="redis://127.0.0.1:1/0", prefix="acme:")
    log = build_log(LearningConfig(), tmp_path / "indexes" / "default", state)  # nothing connects yet
    assert isinstance(log, RedisLog)
    assert log.key == "acme:learn:default"
    assert log.describe() == {"backend": "redis", "url": "redis://127.0.0.1:1/0", "key": "acme:learn:default",
                              "entries": 0, "rate_limit": "all replicas"}


def test_the_registry_names_every_backend() -> None:
    assert LEARN_LOGS.names() == ["file", "memory", "redis"]
    assert isinstance(LEARN_LOGS["memory"](LearningConfig(), Path("x"), None), MemoryLog)
    with pytest.raises(LearnLogError, match="redis://"):
        LEARN_LOGS["redis"](LearningConfig(), Path("x"), None)
    with pytest.raises(ConfigError, match="learning.log='nope'.*file, memory, redis"):
        LEARN_LOGS["nope"]


def test_the_log_file_is_created_with_the_first_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = FileLog(path)
    log.read_new()
    assert not path.exists()
    log.append([entry("a")])
    assert path.exists() and os.stat(path).st_size > 0
