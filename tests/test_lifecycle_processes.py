"""The lifecycle model's second variant: a seeded random walk with three real child processes
writing, deleting, pinning, compacting and collecting concurrently, round after round, checked
by the parent between rounds (see ``test_lifecycle_model.py`` for the model, the knobs
``RUNSTASH_MODEL_STEPS`` / ``RUNSTASH_MODEL_SEED`` and the watchdogs)."""

from __future__ import annotations

import faulthandler
import json
import os
import random
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import runstash
from tests.conftest import spawn_python
from tests.lifecycle_model import (
    BYTES_OF,
    KINDS,
    LARGE_HASHES,
    POOL,
    SCALE,
    SEED,
    Rec,
    assert_quarantined,
    blob_path,
    check_quarantine_accounting,
    damage,
    expected_keep_best,
    quarantine_files,
)

# -- variant 2: real child processes, round after round --------------------------------------

#: One child: opens the store, then runs a seeded script of ``ops`` operations per command
#: line ({"ops": n, "gone": [ids deleted by others], "unavailable": [quarantined hashes]}) and
#: answers with one JSON line: what it acknowledged, in order, and what went wrong.
CHILD = r"""
import asyncio, json, os, random, sys
from pathlib import Path

import runstash
from runstash import ArtifactFacade, NotFoundError

root, pool_dir, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
pool = [p.read_bytes() for p in sorted(pool_dir.glob("*.bin"), key=lambda p: int(p.stem))]
hashes = [runstash.hash_bytes(b) for b in pool]
bytes_of = dict(zip(hashes, pool))
small = [i for i, b in enumerate(pool) if len(b) <= 65536]
rng = random.Random(seed)
store = runstash.Store(root, durability=rng.choice(["os", "os", "fsync"]))
live = {}  # id -> [hash, file hashes, how]
kinds = {}
unavailable = set()


def say(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def meta():
    m = rng.choice([None, 0, 1, 2])
    kw = {"kind": rng.choice("ab"), "run_id": rng.choice(["r1", "r2"]), "pin": rng.random() < 0.2}
    kw["metrics"] = {} if m is None else {"m": m}
    return kw, m


def added(events, a, kw, m, how, stores=True, files=(), manifest=None):
    live[a.id] = [a.hash, list(files), how]
    kinds[a.id] = kw["kind"]
    if stores:
        unavailable.discard(a.hash)
    events.append({"op": "add", "id": a.id, "hash": a.hash, "kind": kw["kind"],
                   "run": kw["run_id"], "metric": m, "pinned": kw["pin"], "stores": stores,
                   "files": list(files), "manifest": manifest, "how": how})


def write(events):
    how = rng.choice(["put", "put", "save", "writer", "ingest"])
    i = rng.randrange(len(pool))
    data = pool[i]
    kw, m = meta()
    if how == "put":
        a = store.put_bytes(data, **kw)
    elif how == "save":
        a = store.save(pool_dir / f"{i}.bin", **kw)
    elif how == "writer":
        with store.writer(".bin", **kw) as w:
            w.write(data)
        a = w.artifact
    else:
        p = store.stage(".bin")
        Path(p).write_bytes(data)
        a = store.ingest(p, **kw)
    assert a.hash == hashes[i] and a.size == len(data), (how, i, a)
    added(events, a, kw, m, f"{how} of payload {i}")


def ingest_dir(events):
    facade = ArtifactFacade(store, run_id="r1")
    staged = Path(asyncio.run(facade.stage_dir()))
    files = rng.sample(small, rng.randint(1, 2))
    for i in files:
        (staged / f"f{i}.bin").write_bytes(pool[i])
    a = asyncio.run(facade.ingest_dir(str(staged), kind="dir"))
    manifest = store.read_bytes(a, verify=True)
    kw = {"kind": "dir", "run_id": "r1", "pin": False}
    added(events, a, kw, None, f"ingest_dir {files}", files=[hashes[i] for i in files],
          manifest=manifest.hex())


def record_many(events):
    i = rng.randrange(len(pool))
    digest = hashes[i]
    surely = digest in {v[0] for v in live.values()} and digest not in unavailable
    kw, m = meta()
    n = rng.randint(1, 3)
    try:
        arts = store.record_many(digest, [kw] * n)
    except NotFoundError:
        assert not surely, f"record_many of stored payload {i} refused"
        return
    for a in arts:
        added(events, a, kw, m, f"record_many of payload {i}", stores=False)


def delete(events):
    if live:
        i = rng.choice(sorted(live))
        store.delete(i)
        del live[i]
        events.append({"op": "del", "id": i})


def purge(events):  # every own record of one kind: whole log segments die at a compaction
    kind = rng.choice("ab")
    for i in sorted(live):
        if kinds.get(i) == kind:
            store.delete(i)
            del live[i]
            events.append({"op": "del", "id": i})


def pin(events):
    if live:
        i = rng.choice(sorted(live))
        flag = rng.random() < 0.5
        a = store.pin(i, flag)
        assert a.pinned == flag
        events.append({"op": "pin", "id": i, "pinned": flag})


def maintain(events):
    if rng.random() < 0.5:
        store.compact()
    else:  # the default grace: deletes nothing this young, but takes gc's locks beside writers
        rep = store.gc(dry_run=False)
        mine = {h for v in live.values() for h in [v[0], *v[1]]}
        assert not set(rep.deleted) & mine, ("gc deleted a live blob", rep.deleted)


def check(errors, where):
    for i, (h, files, how) in sorted(live.items()):
        for d in [h, *files]:
            if d in unavailable:
                continue
            try:
                got = store.read_bytes(d, verify=True)
            except runstash.RunstashError as e:
                what = "" if d == h else f" (its file {d[:20]})"
                errors.append(f"{where}: live {i} ({how}){what} unreadable: {e!r}")
                continue
            if d in bytes_of and got != bytes_of[d]:
                errors.append(f"{where}: live {i} ({how}) reads wrong bytes")


OPS = [write] * 5 + [ingest_dir, record_many, record_many] + [delete] * 3 + [purge, pin, maintain]
say({"ready": os.getpid()})
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd.get("quit"):
        break
    for i in cmd["gone"]:
        live.pop(i, None)
    unavailable = set(cmd["unavailable"])
    events, errors = [], []
    for k in range(cmd["ops"]):
        op = rng.choice(OPS)
        try:
            op(events)
        except Exception as e:
            errors.append(f"op {k} {op.__name__}: {e!r}")
        if rng.random() < 0.2:
            check(errors, f"after op {k} {op.__name__}")
    check(errors, "end of round")
    say({"events": events, "errors": errors})
"""

ROUNDS = max(1, round(250 * SCALE))
OPS_PER_ROUND = 10
CHILDREN = 3
#: Seconds a child may take to start or to answer one round.
CHILD_TIMEOUT = 120.0
#: What the parent does between rounds (one to three of these, drawn).
PARENT_ACTIONS = ("compact", "gc", "gc", "keep_best", "damage", "reopen")


def _read_line(proc: subprocess.Popen[bytes], buf: bytearray, deadline: float) -> dict[str, Any]:
    """The child's next JSON line, or a failure when it does not come before ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"child {proc.pid} did not answer within {CHILD_TIMEOUT} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                rc = proc.wait(timeout=30)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"child {proc.pid} exited (rc {rc}):\n{err[-3000:]}")
            buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


class ProcessWalk:
    """The parent of the process variant: its model, its own long-lived handle, the checks."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.store = runstash.Store(root, durability="os")
        self.live: dict[str, Rec] = {}
        self.bytes_of: dict[str, bytes] = dict(BYTES_OF)
        self.unavailable: set[str] = set()
        self.gone: list[str] = []  # deleted by the parent since the last round

    def apply(self, child: int, rnd: int, events: list[dict[str, Any]]) -> None:
        healed = set()
        for e in events:
            if e["op"] == "add":
                origin = f"{e['how']} by child {child} in round {rnd}"
                rec = Rec(e["hash"], e["kind"], e["run"], e["metric"], e["pinned"], origin)
                rec.files = tuple(e["files"])
                if e["manifest"] is not None:
                    self.bytes_of[e["hash"]] = bytes.fromhex(e["manifest"])
                assert e["id"] not in self.live, f"id reused: {e['id']}"
                self.live[e["id"]] = rec
                if e["stores"]:
                    healed.add(e["hash"])
            elif e["op"] == "del":
                del self.live[e["id"]]
            else:
                self.live[e["id"]].pinned = e["pinned"]
        self.unavailable -= healed

    def needed(self) -> set[str]:
        return {h for r in self.live.values() for h in (r.hash, *r.files)}

    def maintain(self) -> list[str]:
        """The parent's turn between rounds; returns what it did."""
        did = []
        for _ in range(self.rng.randint(1, 3)):
            what = self.rng.choice(PARENT_ACTIONS)
            did.append(what)
            if what == "compact":
                self.store.compact()
            elif what == "gc":
                rep = self.store.gc(grace=0, dry_run=False)
                assert not set(rep.deleted) & self.needed(), "gc deleted a live blob"
            elif what == "keep_best":
                kind, mode = self.rng.choice(KINDS), self.rng.choice(["max", "min"])
                k, per = self.rng.randint(0, 2), self.rng.choice([None, "run"])
                want = expected_keep_best(self.live, kind, mode, k, per)
                rep = self.store.keep_best(
                    kind=kind, metric="m", mode=mode, k=k, per=per, dry_run=False, grace=0
                )
                assert set(rep.deleted) == want, (sorted(set(rep.deleted) ^ want), kind, k, per)
                for i in rep.deleted:
                    del self.live[i]
                self.gone += rep.deleted
                assert not set(rep.gc.deleted) & self.needed(), "keep_best deleted a live blob"
            elif what == "damage":
                cands = sorted({r.hash for r in self.live.values()} & LARGE_HASHES)
                cands = [h for h in cands if h not in self.unavailable]
                if not cands:
                    continue
                digest = self.rng.choice(cands)
                p = blob_path(self.root, digest)
                assert p.is_file(), f"a live large blob has no file: {p}"
                damaged = damage(p, self.rng.choice(["flip", "truncate"]))
                assert self.store.verify(digest) is False
                assert not os.path.lexists(p), "the damaged blob stayed in blobs/ after verify"
                assert_quarantined(self.root, damaged, "verify")
                self.unavailable.add(digest)
            else:
                self.store.close()
                self.store = runstash.Store(self.root, durability="os")
        return did

    def check(self, where: str) -> None:
        fresh = runstash.Store(self.root, durability="os")
        try:
            for name, s in (("parent", self.store), ("fresh handle", fresh)):
                assert s.count() == len(self.live), (where, name, s.count(), len(self.live))
                for i, r in sorted(self.live.items()):
                    a = s.get(i)
                    assert a is not None, f"{where}, {name}: live {i} ({r.origin}) is gone"
                    assert (a.hash, a.pinned) == (r.hash, r.pinned), (where, name, a, r)
                    for h in (r.hash, *r.files):
                        if h in self.unavailable:
                            continue
                        try:
                            got = s.read_bytes(h, verify=True)
                        except runstash.RunstashError as e:
                            raise AssertionError(
                                f"{where}, {name}: live {i} ({r.origin}) unreadable: {e!r}"
                            ) from e
                        assert got == self.bytes_of[h], f"{where}, {name}: {i} wrong bytes"
            rep = fresh.verify_report()
            lost = {r.hash for r in self.live.values() if r.hash in self.unavailable}
            assert {m.hash for m in rep.missing} == lost, (where, rep.missing)
            assert not rep.corrupt and not rep.unreadable, (where, rep)
            if quarantine_files(self.root):
                check_quarantine_accounting(fresh, rep)
        finally:
            fresh.close()


def test_lifecycle_model_processes(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    for i, b in enumerate(POOL):
        (pool_dir / f"{i}.bin").write_bytes(b)
    root = tmp_path / "store"
    walk = ProcessWalk(root, rng)
    procs: list[subprocess.Popen[bytes]] = []
    bufs: list[bytearray] = []
    try:
        for c in range(CHILDREN):
            seed = str(SEED * 10 + c)
            procs.append(spawn_python(CHILD, str(root), str(pool_dir), seed, stdin=subprocess.PIPE))
            bufs.append(bytearray())
        deadline = time.monotonic() + CHILD_TIMEOUT
        for p, b in zip(procs, bufs, strict=True):
            assert "ready" in _read_line(p, b, deadline)
        history: list[str] = []
        for rnd in range(ROUNDS):
            # the parent's own calls (gc, keep_best, ...) could hang too: stop the run then
            faulthandler.dump_traceback_later(2 * CHILD_TIMEOUT, exit=True)
            cmd = {"ops": OPS_PER_ROUND, "gone": walk.gone, "unavailable": sorted(walk.unavailable)}
            for p in procs:
                assert p.stdin is not None
                p.stdin.write((json.dumps(cmd) + "\n").encode())
                p.stdin.flush()
            walk.gone = []
            deadline = time.monotonic() + CHILD_TIMEOUT
            answers = [_read_line(p, b, deadline) for p, b in zip(procs, bufs, strict=True)]
            for c, ans in enumerate(answers):
                walk.apply(c, rnd, ans["events"])
            errors = [f"child {c}: {e}" for c, ans in enumerate(answers) for e in ans["errors"]]
            assert not errors, f"round {rnd} (after parent: {history[-3:]}):\n" + "\n".join(errors)
            walk.check(f"after round {rnd}")
            history.append(f"round {rnd}: " + ", ".join(walk.maintain()))
            walk.check(f"after the parent's {history[-1]}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b'{"quit": true}\n')
            p.stdin.close()
        for p in procs:
            assert p.wait(timeout=CHILD_TIMEOUT) == 0
    finally:
        faulthandler.cancel_dump_traceback_later()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        walk.store.close()
