"""Power cuts, simulated: a writer is killed at a random syscall, then the store directory is
rewound to what a power cut at that instant may have kept, and reopened.

Each round runs a child writer under ``strace -f -y``, which SIGKILLs it on entering the N-th
call of one syscall (``--inject=SYSCALL:signal=SIGKILL:when=N``; the call does not run). The
syscall and N are drawn at random, weighted by how often each write-side syscall occurs in a
dry run of the same round, so the cuts land everywhere: in the store's creation and open,
between a blob's write, fsync, rename and directory fsync, between a log append and its
fdatasync, inside compaction (seal, next segment, snapshot, removal of old files), and after
the last write. The child performs a fixed sequence of writes with fresh bytes each round
(put_bytes of several sizes, save of a 1.5 MiB file, a streaming writer, stage + ingest, pin,
unpin, delete, compact) and acknowledges each one on a pipe once it returned.

Then ``tests/faults/powercut.py`` replays the trace to undo what was not yet durable: file
data written after the file's last fsync is lost or torn (truncated, a random prefix kept, a
range zeroed), and directory entries created, renamed or removed since their directory's last
fsync are undone (all of them, or a random subset). The module's docstring lists what is and
is not modelled. The cut store is reopened, checked, and the next round writes into it (a
reboot, then more work): 40 rounds in ``"fsync"`` durability, 25 in ``"os"``.

What is checked:

- ``"fsync"``: every acknowledged operation survives, in order: the round's records are
  exactly the result of the acknowledged operations, plus at most the one in flight (ids,
  hashes, pins and deletes compared); nothing of earlier rounds is lost or changed; every
  record's blob is on disk and hashes to its name; ``verify()`` finds nothing corrupt or
  stray; no temp file survives the reopen; the store takes new writes.
- ``"os"`` (no fsync at all): nothing is promised about recent writes, and the model loses
  them freely. What must hold: the store either opens or refuses with ``CorruptError`` (a
  file whose contents were lost); when it opens, every record is one that was written, with
  its own hash (nothing invented or altered), and reading a record's bytes with
  ``verify=True`` returns exactly the bytes written or raises ``NotFoundError`` /
  ``CorruptError``, never other bytes.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import runstash
from tests.conftest import STRACE
from tests.faults.powercut import TRACE_SET, Model, parse_trace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)"),
]

# One round's operations. Writes create an artifact labelled {"round": r, "i": k} (k = the
# operation's index); pin/unpin/delete name the artifact of an earlier operation.
TEMPLATE: list[tuple] = [
    ("put", 100),
    ("put", 5_000),
    ("save", 1_500_000),
    ("pin", 0),
    ("writer", 200_000),
    ("ingest", 3_000),
    ("delete", 1),
    ("compact",),
    ("put", 70_000),
    ("unpin", 0),
    ("pin", 8),
    ("put", 300),
]

WRITER = r"""
import os, sys, runstash
root, durability, rnd, src_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
template = eval(sys.argv[5])

def payload(k, size):
    import random
    return random.Random(f"{rnd}:{k}").randbytes(size)

ack = sys.stdout
os.write(2, b"@@BEGIN@@")
s = runstash.Store(root, durability=durability)
ids = {}
for k, op in enumerate(template):
    meta = dict(kind="pc", labels={"round": rnd, "i": k}, metrics={"k": float(k)})
    a = None
    if op[0] == "put":
        a = s.put_bytes(payload(k, op[1]), **meta)
    elif op[0] == "save":
        a = s.save(os.path.join(src_dir, f"src-{k}.bin"), **meta)
    elif op[0] == "writer":
        data = payload(k, op[1])
        with s.writer(".bin", **meta) as w:
            for at in range(0, len(data), 65536):
                w.write(data[at : at + 65536])
        a = w.artifact
    elif op[0] == "ingest":
        p = s.stage(".dat")
        with open(p, "wb") as f:
            f.write(payload(k, op[1]))
        a = s.ingest(p, **meta)
    elif op[0] == "pin":
        s.pin(ids[op[1]])
    elif op[0] == "unpin":
        s.pin(ids[op[1]], pinned=False)
    elif op[0] == "delete":
        s.delete(ids[op[1]])
    elif op[0] == "compact":
        s.compact()
    if a is not None:
        ids[k] = a.id
    ack.write(f"{k} {a.id if a is not None else '-'}\n")
    ack.flush()
os.write(2, b"@@END@@")
"""

WRITES = ("put", "save", "writer", "ingest")


def payload(rnd: int, k: int, size: int) -> bytes:
    return random.Random(f"{rnd}:{k}").randbytes(size)


def expected(rnd: int, upto: int) -> dict[int, tuple[str, bool]]:
    """Artifact index -> (hash, pinned) after the round's first `upto` operations."""
    state: dict[int, tuple[str, bool]] = {}
    for k, op in enumerate(TEMPLATE[:upto]):
        if op[0] in WRITES:
            state[k] = (runstash.hash_bytes(payload(rnd, k, op[1])), False)
        elif op[0] in ("pin", "unpin"):
            h, _ = state[op[1]]
            state[op[1]] = (h, op[0] == "pin")
        elif op[0] == "delete":
            del state[op[1]]
    return state


def make_sources(src_dir: Path, rnd: int) -> None:
    src_dir.mkdir(exist_ok=True)
    for k, op in enumerate(TEMPLATE):
        if op[0] == "save":
            (src_dir / f"src-{k}.bin").write_bytes(payload(rnd, k, op[1]))


@dataclass
class Round:
    acked: list[tuple[int, str]]  # (operation index, artifact id or "-")
    killed: bool
    trace: str
    log: list[str]


def strace_cmd(trace: Path, kill: tuple[str, int] | None) -> list[str]:
    cmd = [str(STRACE), "-f", "-qq", "-y", "-s", "12", "-o", str(trace), "-e", "trace=" + TRACE_SET]
    if kill is not None:
        cmd += ["-e", f"inject={kill[0]}:signal=SIGKILL:when={kill[1]}"]
    return cmd


def run_round(
    root: Path, durability: str, rnd: int, work: Path, kill: tuple[str, int] | None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    src_dir = work / "src"
    make_sources(src_dir, rnd)
    trace = work / f"round-{rnd}.trace"
    cmd = strace_cmd(trace, kill) + [
        sys.executable, "-c", WRITER, str(root), durability, str(rnd), str(src_dir),
        repr(TEMPLATE),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True), trace


def kill_points(work: Path, durability: str) -> list[tuple[str, int]]:
    """Every (syscall, invocation number) of a dry run's writer, from the store's open to its
    last write, counted as strace's --inject counts them (per syscall, main thread)."""
    root = work / "dry-store"
    points: list[tuple[str, int]] = []
    for rnd in (0, 1):  # a fresh store, then one that exists
        res, trace = run_round(root, durability, 1000 + rnd, work, None)
        assert res.returncode == 0, res.stderr
        calls = parse_trace(trace.read_text())
        main = calls[0].pid
        counts: dict[str, int] = {}
        active = False
        for c in calls:
            if c.pid != main:
                continue
            counts[c.name] = counts.get(c.name, 0) + 1
            if c.name == "write" and "@@BEGIN@@" in c.args:
                active = True
            elif c.name == "write" and "@@END@@" in c.args:
                active = False
            elif active and str(root) in c.args:
                points.append((c.name, counts[c.name]))
    return sorted(set(points))


def parse_acks(out: str) -> list[tuple[int, str]]:
    acks = []
    for line in out.splitlines(keepends=True):
        if line.endswith("\n"):
            k, art_id = line.split()
            acks.append((int(k), art_id))
    return acks


def power_cut(
    root: Path, durability: str, rnd: int, work: Path, rng: random.Random, points: list
) -> Round:
    model = Model.at_round_start(root)
    kill = rng.choice(points) if rng.random() < 0.95 else None  # sometimes: after the end
    res, trace = run_round(root, durability, rnd, work, kill)
    killed = res.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    assert killed or res.returncode == 0, f"round {rnd}: writer failed: {res.stderr}"
    acks = parse_acks(res.stdout)
    assert [k for k, _ in acks] == list(range(len(acks)))
    model.feed(parse_trace(trace.read_text()))
    variant = rng.choice(["lose-all", "random"])
    log = [f"kill at {kill}, killed={killed}, {len(acks)} acknowledged, cut: {variant}"]
    log += model.cut(rng, variant)
    return Round(acks, killed, str(trace), log)


def test_power_cut_fsync_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    root = (tmp_path / "store").resolve()
    work = tmp_path / "work"
    work.mkdir()
    points = kill_points(work, "fsync")
    rng = random.Random(20261124)
    known: dict[str, tuple[str, bool]] = {}  # id -> (hash, pinned), earlier rounds
    for rnd in range(40):
        r = power_cut(root, "fsync", rnd, work, rng, points)
        why = f"round {rnd}: " + "\n  ".join(r.log)
        with runstash.Store(root, durability="fsync") as s:
            arts = s.list()
            by_id = {a.id: a for a in arts}
            for art_id, (h, pinned) in known.items():
                a = by_id.get(art_id)
                assert a is not None, f"{why}\nrecord {art_id} of an earlier round lost"
                assert (a.hash, a.pinned) == (h, pinned), f"{why}\n{art_id} changed"
            mine = {a.labels["i"]: a for a in arts if a.labels.get("round") == rnd}
            got = {i: (a.hash, a.pinned) for i, a in mine.items()}
            n = len(r.acked)
            options = [expected(rnd, n)]
            if n < len(TEMPLATE):
                options.append(expected(rnd, n + 1))
            assert got in options, (
                f"{why}\nrecords {got} are not the {n} acknowledged operations "
                f"(or those and the one in flight): {options}"
            )
            for k, art_id in r.acked:
                if art_id != "-" and k in got:
                    assert mine[k].id == art_id, f"{why}\nrecord {k} has another id"
            assert len(arts) == len(known) + len(mine), f"{why}\nrecords from nowhere"
            for a in arts:
                assert s.verify(a) is True, f"{why}\nblob of {a.id} damaged or missing"
            report = s.verify()
            assert report.ok, f"{why}\n{report}"
            leftovers = list(Path(root, "staging").glob(".rstmp.*"))
            assert leftovers == [], f"{why}\ntemps survived the reopen: {leftovers}"
            known = {a.id: (a.hash, a.pinned) for a in arts}
    with runstash.Store(root, durability="fsync") as s:
        new = s.put_bytes(b"after 40 power cuts", kind="pc")
        assert s.count() == len(known) + 1
    with runstash.Store(root, durability="os") as s:
        assert s.get(new.id) == new


def test_power_cut_os_never_serves_wrong_data(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    points = kill_points(work, "os")
    rng = random.Random(99)
    store_no = 0
    root = (tmp_path / f"store-{store_no}").resolve()
    written: dict[tuple[int, int], str] = {}  # (round, index) -> hash of every write made
    refused = 0
    for rnd in range(25):
        r = power_cut(root, "os", rnd, work, rng, points)
        why = f"round {rnd}: " + "\n  ".join(r.log)
        for k, op in enumerate(TEMPLATE):
            if op[0] in WRITES:
                written[(rnd, k)] = runstash.hash_bytes(payload(rnd, k, op[1]))
        try:
            s = runstash.Store(root, durability="os")
        except runstash.CorruptError:
            refused += 1  # allowed in "os" durability; carry on with a new store
            store_no += 1
            root = (tmp_path / f"store-{store_no}").resolve()
            continue
        with s:
            for a in s.list():
                key = (a.labels["round"], a.labels["i"])
                assert written.get(key) == a.hash, f"{why}\n{a} was never written"
                assert key[0] < rnd or key[1] <= len(r.acked), f"{why}\n{a} not yet written"
                try:
                    data = s.read_bytes(a, verify=True)
                except (runstash.NotFoundError, runstash.CorruptError):
                    continue
                assert runstash.hash_bytes(data) == a.hash, f"{why}\nwrong bytes served"
            s.put_bytes(b"still writable", kind="other", labels={"round": -1, "i": -1})
            written[(-1, -1)] = runstash.hash_bytes(b"still writable")
    print(f"os: {refused} of 25 cuts left a store that refuses to open")
    assert refused < 25, "the store never reopened at all"
