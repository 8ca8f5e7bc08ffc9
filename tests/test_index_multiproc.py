"""Several processes share one store's index, with real processes writing at the same time.

- 4 processes each write 5,000 artifacts at once (started together by a pipe handshake); after
  all are done (a barrier run by the parent through their pipes) each writer, on the handle it
  wrote with, sees all 20,000 records. A fifth process opened afterwards sees exactly 20,000
  records with distinct ids, each writer's records in the order it wrote them.
- A record written, pinned or deleted by one process is visible to another process's open
  handle on its next query, including across a compaction done by the other process.
- A handle that lags behind one or more compactions by another process still writes where
  everyone finds it; writers racing a process that compacts in a loop lose nothing.
- Threads of one process writing at once (sharing fsyncs in "fsync" mode) lose nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

import runstash
from tests.conftest import spawn_python

WRITERS = 4
PER_WRITER = 5000

WRITER = r"""
import sys, runstash
root, w, n, nw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = runstash.Store(root, durability="os")
s.count()
print("ready", flush=True)
assert sys.stdin.readline() == "go\n"
for i in range(n):
    s.put_bytes(b"%d.%d" % (w, i), kind="mp", labels={"writer": w})
print("done", flush=True)
assert sys.stdin.readline() == "check\n"
ids = [a.id for a in s.list()]
per_writer = [s.count(labels={"writer": j}) for j in range(nw)]
print("seen", s.count(), len(ids), len(set(ids)), *per_writer, flush=True)
"""

FIFTH = r"""
import json, sys, runstash
root, n, nw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = runstash.Store(root, durability="os")
arts = s.list()
ids = [a.id for a in arts]
in_order = []
for w in range(nw):
    mine = s.list(labels={"writer": w})
    expect = [runstash.hash_bytes(b"%d.%d" % (w, i)) for i in range(n)]
    in_order.append([a.hash for a in mine] == expect)
intact = all(s.verify(a.hash) for a in arts[::97])
print(json.dumps({
    "count": s.count(), "listed": len(ids), "distinct": len(set(ids)),
    "kind": s.count(kind="mp"), "in_order": in_order, "intact": intact,
}))
"""


def send(p: subprocess.Popen, line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line.encode() + b"\n")
    p.stdin.flush()


def expect_line(p: subprocess.Popen, want: str) -> None:
    assert p.stdout is not None and p.stderr is not None
    line = p.stdout.readline().decode()
    if line != want + "\n":
        p.kill()
        raise AssertionError(f"expected {want!r}, got {line!r}: {p.stderr.read().decode()}")


def test_four_writers_at_once_then_a_fifth_reader(tmp_path: Path) -> None:
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    kids = [
        spawn_python(
            WRITER, str(root), str(w), str(PER_WRITER), str(WRITERS), stdin=subprocess.PIPE
        )
        for w in range(WRITERS)
    ]
    try:
        for k in kids:
            expect_line(k, "ready")
        for k in kids:
            send(k, "go")  # every writer starts together
        for k in kids:
            expect_line(k, "done")
        for k in kids:
            send(k, "check")  # only once every writer is done
        total = WRITERS * PER_WRITER
        for w, k in enumerate(kids):
            out, err = k.communicate(timeout=300)
            assert k.returncode == 0, err.decode()
            assert out.decode().split() == [
                "seen",
                str(total),
                str(total),
                str(total),
                *[str(PER_WRITER)] * WRITERS,
            ], f"writer {w} without reopening: {out.decode()}"
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
                k.wait()

    fifth = spawn_python(FIFTH, str(root), str(PER_WRITER), str(WRITERS))
    out, err = fifth.communicate(timeout=300)
    assert fifth.returncode == 0, err.decode()
    report = json.loads(out)
    assert report == {
        "count": total,
        "listed": total,
        "distinct": total,
        "kind": total,
        "in_order": [True] * WRITERS,
        "intact": True,
    }, report

    with runstash.Store(root, durability="os") as s:
        assert s.count() == total
        assert [s.count(labels={"writer": w}) for w in range(WRITERS)] == [PER_WRITER] * WRITERS
        assert s.count(labels={"writer": WRITERS}) == 0


PEER = r"""
import json, sys, runstash
s = runstash.Store(sys.argv[1], durability="os")
def show(art):
    return None if art is None else art.to_dict()
print(json.dumps({"count": s.count()}), flush=True)
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "put":
        a = s.put_bytes(arg.encode(), kind="peer", labels={"from": "child"}, metrics={"m": 5.0})
        reply = show(a)
    elif cmd == "get":
        reply = {"art": show(s.get(arg)), "count": s.count(), "pinned": s.count(pinned=True)}
    elif cmd == "pin":
        reply = show(s.pin(arg))
    elif cmd == "delete":
        s.delete(arg)
        reply = None
    elif cmd == "compact":
        s.compact()
        reply = [a.id for a in s.list()]
    elif cmd == "best":
        reply = show(s.best(metric="m", mode=arg))
    print(json.dumps(reply), flush=True)
"""


def test_other_process_records_visible_without_reopening(tmp_path: Path) -> None:
    root = tmp_path / "store"
    mine = runstash.Store(root, durability="os")
    assert mine.count() == 0  # this handle has loaded the index before the other writes
    peer = spawn_python(PEER, str(root), stdin=subprocess.PIPE)
    assert peer.stdout is not None

    def ask(line: str) -> object:
        send(peer, line)
        out = peer.stdout.readline()
        if not out:
            peer.wait()
            raise AssertionError(peer.stderr.read().decode() if peer.stderr else "peer died")
        return json.loads(out)

    try:
        assert json.loads(peer.stdout.readline()) == {"count": 0}

        # The peer writes; this handle sees it on its next query.
        theirs = ask("put from-peer")
        got = mine.get(theirs["id"])
        assert got is not None, "another process's record not visible without reopening"
        assert got.to_dict() == theirs
        assert mine.count() == 1 and mine.count(kind="peer") == 1
        assert mine.best(metric="m").id == theirs["id"]

        # This handle writes; the peer sees it.
        ours = mine.put_bytes(b"from-me", kind="local", metrics={"m": 9.0})
        reply = ask(f"get {ours.id}")
        assert reply["art"] == ours.to_dict() and reply["count"] == 2
        assert ask("best max")["id"] == ours.id
        assert ask("best min")["id"] == theirs["id"]

        # The peer pins our record; we see the pin.
        assert ask(f"pin {ours.id}")["pinned"] is True
        assert mine.get(ours.id).pinned is True
        assert [a.id for a in mine.list(pinned=True)] == [ours.id]

        # We delete theirs; the peer no longer sees it.
        mine.delete(theirs["id"])
        reply = ask(f"get {theirs['id']}")
        assert reply == {"art": None, "count": 1, "pinned": 1}

        # The peer compacts (new snapshot and segment); both handles carry on.
        assert ask("compact x") == [ours.id]
        assert [a.id for a in mine.list()] == [ours.id]
        again = mine.put_bytes(b"after-compact", kind="local")
        assert ask(f"get {again.id}")["art"] == again.to_dict()
        late = ask("put late")
        assert mine.get(late["id"]) is not None
        # ids from two processes: ordered by id, which within a millisecond need not be
        # the order in time
        expect = sorted([ours.id, again.id, late["id"]])
        assert [a.id for a in mine.list()] == expect
    finally:
        assert peer.stdin is not None
        peer.stdin.close()
        peer.wait(timeout=60)
        mine.close()
    assert peer.returncode == 0, peer.stderr.read().decode() if peer.stderr else ""
    with runstash.Store(root, durability="os") as s:
        assert [a.id for a in s.list()] == expect


COMPACT = r"""
import sys, runstash
s = runstash.Store(sys.argv[1], durability="os")
for _ in range(int(sys.argv[2])):
    s.compact()
print(s.count(), flush=True)
"""


@pytest.mark.parametrize("compactions", [1, 2, 3])
def test_writer_lagging_behind_compactions_of_another_process(tmp_path: Path, compactions):
    """A handle that last looked before another process compacted (once or several times)
    writes again: the write must land where every process (and a reopen) finds it."""
    root = tmp_path / "store"
    mine = runstash.Store(root, durability="os")
    first = mine.put_bytes(b"before", kind="lag")
    child = spawn_python(COMPACT, str(root), str(compactions))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    assert out.decode().split() == ["1"]
    second = mine.put_bytes(b"after", kind="lag")
    assert mine.count(kind="lag") == 2
    peer = spawn_python(COMPACT, str(root), "0")
    out, err = peer.communicate(timeout=60)
    assert peer.returncode == 0, err.decode()
    assert out.decode().split() == ["2"], (
        f"after {compactions} compaction(s) by another process, a write by a lagging handle "
        "is not visible to a new process"
    )
    mine.close()
    with runstash.Store(root, durability="os") as s:
        assert [a.id for a in s.list()] == [first.id, second.id]


COMPACTOR = r"""
import sys, threading, runstash
s = runstash.Store(sys.argv[1], durability="os")
stop = threading.Event()
print("ready", flush=True)
assert sys.stdin.readline() == "go\n"
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
n = 0
while not stop.is_set() or n < 3:
    s.compact()
    n += 1
print("compacted", n, s.count(), flush=True)
"""


def test_writers_while_another_process_compacts(tmp_path: Path) -> None:
    """3 processes write 2,000 artifacts each while a fourth compacts in a loop: nothing is
    lost or duplicated, for the writers, the compactor, and a later reader."""
    root = tmp_path / "store"
    runstash.Store(root, durability="os").close()
    n, nw = 2000, 3
    writers = [
        spawn_python(WRITER, str(root), str(w), str(n), str(nw), stdin=subprocess.PIPE)
        for w in range(nw)
    ]
    compactor = spawn_python(COMPACTOR, str(root), stdin=subprocess.PIPE)
    kids = [*writers, compactor]
    try:
        for k in kids:
            expect_line(k, "ready")
        for k in kids:
            send(k, "go")
        for k in writers:
            expect_line(k, "done")
        send(compactor, "stop")
        out, err = compactor.communicate(timeout=300)
        assert compactor.returncode == 0, err.decode()
        words = out.decode().split()
        assert words[0] == "compacted" and words[2] == str(n * nw), out.decode()
        for k in writers:
            send(k, "check")
        for w, k in enumerate(writers):
            out, err = k.communicate(timeout=300)
            assert k.returncode == 0, err.decode()
            total = str(n * nw)
            assert out.decode().split() == ["seen", total, total, total, *[str(n)] * nw], (
                f"writer {w}: {out.decode()}"
            )
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
                k.wait()
    fifth = spawn_python(FIFTH, str(root), str(n), str(nw))
    out, err = fifth.communicate(timeout=300)
    assert fifth.returncode == 0, err.decode()
    report = json.loads(out)
    assert (report["count"], report["distinct"]) == (n * nw, n * nw), report
    assert report["in_order"] == [True] * nw and report["intact"], report


THREADS = 8
PER_THREAD = 150


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_threads_of_one_process_write_at_once(tmp_path: Path, durability: str) -> None:
    """8 threads share one Store (in "fsync" mode they share fsyncs): every write is recorded
    once, each thread's records in its order, and all survive a reopen."""
    root = tmp_path / "store"
    store = runstash.Store(root, durability=durability)
    go = threading.Barrier(THREADS)
    got: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            go.wait()
            got[t] = [
                store.put_bytes(b"%d.%d" % (t, i), labels={"t": t}, metrics={"i": i}).id
                for i in range(PER_THREAD)
            ]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    all_ids = [i for ids in got.values() for i in ids]
    assert len(set(all_ids)) == THREADS * PER_THREAD
    for t, ids in got.items():
        assert ids == sorted(ids), "ids of one thread are time-ordered"
        assert [a.id for a in store.list(labels={"t": t})] == ids
    store.close()
    with runstash.Store(root, durability="os") as s:
        assert s.count() == THREADS * PER_THREAD
        assert sorted(a.id for a in s.list()) == sorted(all_ids)
        for t in range(THREADS):
            assert s.best(metric="i", labels={"t": t}).id == got[t][-1]
