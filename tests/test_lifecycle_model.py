"""The blob lifecycle against a plain-Python model: nothing acknowledged is ever lost.

Two variants drive one store root through random interleavings of every way bytes enter and
leave it: ``put_bytes`` (small payloads, packed into the log, and large ones over 64 KiB, a
blob file each), ``save`` of a file, ``writer``, ``stage`` + ``ingest``,
``ArtifactFacade.ingest_dir``, ``record_many``, ``delete``, ``pin`` / unpin, ``compact``,
``gc(grace=0, dry_run=False)``, ``keep_best(..., dry_run=False)``, reopening a handle, and
damage (a byte of a blob file flipped, or the file truncated) followed by detection (``verify``,
``read_bytes(verify=True)``, ``verify_report``) or by a write of the same bytes.

Payloads come from a small pool, so dedup, revival (bytes written again after all their records
were deleted, also after another handle compacted or collected them) and writes onto an old
orphan happen all the time. The model holds what must be live: id -> (hash, pinned, kind,
metric, run); the bytes of each hash are known. After every step, every live acknowledged
record reads back with ``read_bytes(art, verify=True)`` from every handle, deleted records are
gone, ``count()`` agrees; every few steps (and at the end) a fresh handle reads everything back
and its ``verify_report()`` is intact.

Damage: by the contract, a damaged blob file that a verified read, ``verify``,
``verify_report`` or a write detects moves into ``<root>/quarantine/``. Detected damage makes
the hash unavailable in the model (its live records must then raise ``NotFoundError`` /
``CorruptError`` and ``verify_report().missing`` must list it) until any write path stores
those bytes again, which heals every record naming them.

- ``test_lifecycle_model_in_process``: a hypothesis state machine over two or three
  ``runstash.Store`` handles in this process (separate handles behave as separate processes:
  each keeps its own index state).
- ``test_lifecycle_model_processes``: a seeded random walk with three real child processes
  that run seeded scripts of writes (all five paths), record_many, deletes, pins, compactions,
  gc at the default grace and verified read-backs concurrently, round after round, and report
  what was acknowledged (JSON lines on stdout); between rounds the parent compacts, collects
  with ``grace=0``, applies ``keep_best``, damages and detects, and checks every acknowledged
  live record (its own handle, a fresh handle, verify_report).

Both are seeded (hypothesis ``derandomize=True``; the walk has a fixed seed) and bounded:
with the defaults, 12,000 state-machine steps (120 examples of 100 steps) and 250 rounds of 3
children x 10 operations, each variant takes about 15-45 s on a 2-vCPU machine with the debug
build of ``.ci/run``.

- ``RUNSTASH_MODEL_STEPS=N`` scales both: N is the number of state-machine steps of the
  in-process variant (default 12000), and the process variant's rounds grow in proportion
  (250 * N / 12000). A long run: ``RUNSTASH_MODEL_STEPS=200000 python -m pytest -q
  tests/test_lifecycle_model.py``.
- ``RUNSTASH_MODEL_SEED=S`` seeds the process walk with S instead of the fixed seed, and turns
  hypothesis' derandomization off, so each run explores other interleavings (add pytest's
  ``--hypothesis-seed=S`` to repeat an in-process run; a failure prints its shrunk steps).

A hang (the deadlock of issue 10, item 5) cannot be interrupted from Python inside the
extension: both variants arm ``faulthandler.dump_traceback_later(exit=True)`` (per step, per
round), which stops the run with every thread's traceback, and the process variant kills its
children when one does not answer within ``CHILD_TIMEOUT``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import runstash
from runstash import ArtifactFacade, CorruptError, NotFoundError
from tests.conftest import spawn_python
from tests.facade_helpers import run

DEFAULT_STEPS = 12000
STEPS = max(1, int(os.environ.get("RUNSTASH_MODEL_STEPS", DEFAULT_STEPS)))
SCALE = STEPS / DEFAULT_STEPS
_SEED_ENV = os.environ.get("RUNSTASH_MODEL_SEED")
SEED = int(_SEED_ENV) if _SEED_ENV else 20261123
STEPS_PER_EXAMPLE = 100
#: A fresh handle reads everything back and runs verify_report every this many steps.
FRESH_EVERY = 10
#: Seconds one state-machine step (with its checks) may take before the run is stopped.
STEP_TIMEOUT = 180.0

PACK_MAX = 64 * 1024


def _payload(i: int, size: int) -> bytes:
    return random.Random(f"lifecycle-{i}").randbytes(size)


#: Small payloads (packed into the log by put_bytes and a writer; 65536 is pack_max itself).
SMALL_SIZES = (0, 1, 33, 700, 5000, PACK_MAX)
#: Large payloads: a blob file each, the only ones the tests damage.
LARGE_SIZES = (PACK_MAX + 1, 80_000, 150_000)
POOL: tuple[bytes, ...] = tuple(_payload(i, n) for i, n in enumerate(SMALL_SIZES + LARGE_SIZES))
SMALL = tuple(range(len(SMALL_SIZES)))
LARGE = tuple(range(len(SMALL_SIZES), len(POOL)))
HASH_OF: dict[bytes, str] = {b: runstash.hash_bytes(b) for b in POOL}
BYTES_OF: dict[str, bytes] = {h: b for b, h in HASH_OF.items()}
LARGE_HASHES = frozenset(HASH_OF[POOL[i]] for i in LARGE)
WRITE_PATHS = ("put", "save", "writer", "ingest")
KINDS = ("a", "b")
RUNS = ("r1", "r2")
METRICS = (None, 0, 1, 2)


@dataclass
class Rec:
    """What the model knows of one live record."""

    hash: str
    kind: str
    run_id: str
    metric: int | None
    pinned: bool
    origin: str  # how it was written, for failure messages
    files: tuple[str, ...] = ()  # a directory artifact's file hashes


def blob_path(root: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return root / "blobs" / hexd[:2] / hexd[2:]


def quarantine_files(root: Path) -> list[Path]:
    q = root / "quarantine"
    return sorted(p for p in q.rglob("*") if p.is_file()) if q.is_dir() else []


def damage(path: Path, how: str) -> bytes:
    """Flip a byte in place (same size) or cut the file short, as bit rot or a bad copy;
    returns the damaged bytes."""
    os.chmod(path, 0o644)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(size // 2)
        else:
            f.seek(size // 3)
            b = f.read(1)
            f.seek(size // 3)
            f.write(bytes([b[0] ^ 0x5A]))
    return path.read_bytes()


def assert_quarantined(root: Path, damaged: bytes, what: str) -> None:
    """The damaged file is in ``<root>/quarantine/`` (under whatever name)."""
    for q in quarantine_files(root):
        if q.stat().st_size == len(damaged) and q.read_bytes() == damaged:
            return
    raise AssertionError(f"{what}: the damaged blob file did not move into quarantine/")


def check_quarantine_accounting(store: runstash.Store, rep: Any) -> None:
    """verify_report().quarantined and stats() count the files in quarantine/ (contract 3)."""
    files = quarantine_files(Path(store.root))
    assert len(rep.quarantined) == len(files), (rep.quarantined, files)
    st_ = store.stats()
    assert st_.quarantined_files == len(files), st_
    assert st_.quarantined_bytes == sum(f.stat().st_size for f in files), st_


def write_via(
    store: runstash.Store, data: bytes, how: str, src_dir: Path, **kw: Any
) -> runstash.Artifact:
    """Store ``data`` through one of the four write paths."""
    if how == "put":
        return store.put_bytes(data, **kw)
    if how == "save":
        fd, name = tempfile.mkstemp(dir=src_dir, suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return store.save(name, **kw)
        finally:
            os.unlink(name)
    if how == "writer":
        with store.writer(".bin", **kw) as w:
            w.write(data[: len(data) // 2])
            w.write(data[len(data) // 2 :])
        assert w.artifact is not None
        return w.artifact
    if how == "ingest":
        staged = store.stage(".bin")
        Path(staged).write_bytes(data)
        return store.ingest(staged, **kw)
    raise AssertionError(how)


def expected_keep_best(
    live: dict[str, Rec], kind: str, mode: str, k: int, per: str | None
) -> set[str]:
    """The ids keep_best must delete (README: top k per group by the metric, ties to the older
    id, pinned records count towards k and are never deleted, records without it are kept)."""
    groups: dict[str | None, list[str]] = defaultdict(list)
    for i, r in live.items():
        if r.kind == kind and r.metric is not None:
            groups[r.run_id if per == "run" else None].append(i)
    sign = -1 if mode == "max" else 1
    out: set[str] = set()
    for ids in groups.values():
        ranked = sorted(ids, key=lambda i: (sign * (live[i].metric or 0), i))
        out |= {i for i in ranked[k:] if not live[i].pinned}
    return out


# -- variant 1: a hypothesis state machine over handles in this process ------------------------


handle_st = st.integers(0, 2)
pick_st = st.integers(0, 10_000)
meta_st = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "metric": st.sampled_from(METRICS),
        "run_id": st.sampled_from(RUNS),
        "pin": st.sampled_from([False, False, False, True]),
    }
)


class LifecycleMachine(RuleBasedStateMachine):
    """Two or three handles on one root vs. a dict of live records."""

    base: Path  # set by the test (under its tmp_path)

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lifecycle-", dir=self.base))
        self.root = self.tmp / "store"
        self.src = self.tmp / "src"
        self.src.mkdir()
        self.handles: list[runstash.Store] = []
        self.live: dict[str, Rec] = {}
        self.deleted: list[str] = []
        self.unavailable: set[str] = set()  # quarantined hashes not yet written again
        self.bytes_of: dict[str, bytes] = dict(BYTES_OF)  # + directory manifests
        self.steps = 0

    def teardown(self) -> None:
        try:
            # The last word: a fresh handle reads everything (unless a step already failed:
            # hypothesis calls teardown in a finally, with that exception propagating).
            if self.handles and sys.exc_info()[1] is None:
                self._check_fresh_handle()
        finally:
            faulthandler.cancel_dump_traceback_later()
            for s in self.handles:
                s.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------

    def _h(self, h: int) -> tuple[int, runstash.Store]:
        i = h % len(self.handles)
        return i, self.handles[i]

    def _pick(self, pick: int) -> str:
        ids = sorted(self.live)
        return ids[pick % len(ids)]

    def _needed(self) -> set[str]:
        """Hashes gc must keep: named by a live record or a file of a live directory."""
        out = set()
        for r in self.live.values():
            out.add(r.hash)
            out.update(r.files)
        return out

    def _stored(self) -> set[str]:
        """Hashes whose bytes the store surely holds."""
        return self._needed() - self.unavailable

    def _add(self, art: runstash.Artifact, rec: Rec, stores_bytes: bool = True) -> None:
        assert art.id not in self.live and art.id not in self.deleted, f"id reused: {art.id}"
        assert art.hash == rec.hash, (art, rec)
        assert art.pinned == rec.pinned, (art, rec)
        self.live[art.id] = rec
        if stores_bytes:  # a write of the bytes heals them (record_many stores none)
            self.unavailable.discard(rec.hash)

    def _forget(self, ids: set[str] | list[str]) -> None:
        for i in ids:
            del self.live[i]
            self.deleted.append(i)

    def _read_back(self, name: str, s: runstash.Store) -> None:
        assert s.count() == len(self.live), (name, s.count(), len(self.live))
        for i, r in self.live.items():
            a = s.get(i)
            assert a is not None, f"{name}: live record {i} ({r.origin}) is gone"
            assert (a.hash, a.pinned) == (r.hash, r.pinned), (name, i, a, r)
            for h in (r.hash, *r.files):
                if h in self.unavailable:
                    with pytest.raises((NotFoundError, CorruptError)):
                        s.read_bytes(h, verify=True)
                    continue
                try:
                    got = s.read_bytes(a if h == r.hash else h, verify=True)
                except runstash.RunstashError as e:
                    raise AssertionError(
                        f"{name}: live record {i} ({r.origin}) does not read back"
                        f"{'' if h == r.hash else f' (its file {h})'}: {e!r}"
                    ) from e
                assert got == self.bytes_of[h], f"{name}: record {i} ({r.origin}): wrong bytes"
        for i in self.deleted[-16:]:
            assert s.get(i) is None, f"{name}: deleted record {i} is back"

    def _check_fresh_handle(self) -> None:
        fresh = runstash.Store(self.root, durability="os")
        try:
            self._read_back("fresh handle", fresh)
            rep = fresh.verify_report()
            lost = {r.hash for r in self.live.values() if r.hash in self.unavailable}
            assert {m.hash for m in rep.missing} == lost, rep.missing
            assert not rep.corrupt and not rep.unreadable, rep
            if quarantine_files(self.root):
                check_quarantine_accounting(fresh, rep)
        finally:
            fresh.close()

    # -- setup --------------------------------------------------------------------------

    @initialize(n=st.integers(2, 3), fsync=st.booleans())
    def open_handles(self, n: int, fsync: bool) -> None:
        faulthandler.dump_traceback_later(STEP_TIMEOUT, exit=True)
        for i in range(n):
            durability = "fsync" if fsync and i == 0 else "os"
            self.handles.append(runstash.Store(self.root, durability=durability))

    # -- writes -------------------------------------------------------------------------

    @rule(h=handle_st, payload=st.sampled_from(range(len(POOL))), how=st.sampled_from(WRITE_PATHS))
    def write(self, h: int, payload: int, how: str) -> None:
        """A write with plain metadata (so that writes are the commonest step)."""
        self.write_meta(h, payload, how, {"kind": "a", "metric": 1, "run_id": "r1", "pin": False})

    @rule(
        h=handle_st,
        payload=st.sampled_from(range(len(POOL))),
        how=st.sampled_from(WRITE_PATHS),
        meta=meta_st,
    )
    def write_meta(self, h: int, payload: int, how: str, meta: dict[str, Any]) -> None:
        i, s = self._h(h)
        data = POOL[payload]
        metrics = {} if meta["metric"] is None else {"m": meta["metric"]}
        art = write_via(
            s,
            data,
            how,
            self.src,
            kind=meta["kind"],
            metrics=metrics,
            run_id=meta["run_id"],
            pin=meta["pin"],
        )
        origin = f"{how} of payload {payload} ({len(data)} B) by handle {i} at step {self.steps}"
        rec = Rec(HASH_OF[data], meta["kind"], meta["run_id"], meta["metric"], meta["pin"], origin)
        self._add(art, rec)
        assert art.size == len(data)

    @rule(
        h=handle_st,
        files=st.lists(st.sampled_from(SMALL), min_size=1, max_size=2),
        name=st.sampled_from(["x", "y"]),
    )
    def ingest_dir(self, h: int, files: list[int], name: str) -> None:
        i, s = self._h(h)
        facade = ArtifactFacade(s, run_id="r1")
        staged = Path(run(facade.stage_dir()))
        expected = set()
        for n, payload in enumerate(files):
            p = staged / f"{name}{n}.bin"
            p.write_bytes(POOL[payload])
            expected.add((p.name, HASH_OF[POOL[payload]]))
        art = run(facade.ingest_dir(str(staged), kind="dir"))
        try:
            manifest = s.read_bytes(art, verify=True)
        except runstash.RunstashError as e:
            raise AssertionError(f"handle {i}: a fresh ingest_dir does not read back: {e!r}") from e
        listed = {(e["path"], e["hash"]) for e in json.loads(manifest)["files"]}
        assert listed == expected, (listed, expected)
        self.bytes_of[art.hash] = manifest
        origin = f"ingest_dir {files} by handle {i} at step {self.steps}"
        rec = Rec(art.hash, "dir", "r1", None, False, origin, tuple(h for _, h in expected))
        self._add(art, rec)

    @rule(
        h=handle_st,
        payload=st.sampled_from(range(len(POOL))),
        n=st.integers(1, 3),
        meta=meta_st,
    )
    def record_many(self, h: int, payload: int, n: int, meta: dict[str, Any]) -> None:
        """Records for a stored blob; a hash not surely stored may also be refused
        (NotFoundError, nothing appended), but what is acknowledged must read back."""
        i, s = self._h(h)
        digest = HASH_OF[POOL[payload]]
        surely = digest in self._stored()
        metrics = {} if meta["metric"] is None else {"m": meta["metric"]}
        item = {"kind": meta["kind"], "metrics": metrics, "run_id": meta["run_id"]}
        item["pin"] = meta["pin"]
        before = len(self.live)
        try:
            arts = s.record_many(digest, [item] * n)
        except NotFoundError:
            assert not surely, f"record_many of a stored blob (payload {payload}) refused"
            for j, other in enumerate(self.handles):
                assert other.count() == before, f"refused record_many appended (handle {j})"
            return
        assert len(arts) == n
        assert digest not in self.unavailable, "record_many of a quarantined blob acknowledged"
        origin = f"record_many of payload {payload} by handle {i} at step {self.steps}"
        origin += "" if surely else " (not surely stored)"
        for a in arts:
            rec = Rec(digest, meta["kind"], meta["run_id"], meta["metric"], meta["pin"], origin)
            self._add(a, rec, stores_bytes=False)

    # -- records ------------------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(h=handle_st, pick=pick_st)
    def delete(self, h: int, pick: int) -> None:
        _, s = self._h(h)
        i = self._pick(pick)
        s.delete(i)
        self._forget([i])

    @precondition(lambda self: self.deleted)
    @rule(h=handle_st, pick=pick_st)
    def delete_again(self, h: int, pick: int) -> None:
        _, s = self._h(h)
        with pytest.raises(NotFoundError):
            s.delete(self.deleted[pick % len(self.deleted)])

    @precondition(lambda self: self.live)
    @rule(h=handle_st, pick=pick_st, pinned=st.booleans())
    def pin(self, h: int, pick: int, pinned: bool) -> None:
        _, s = self._h(h)
        i = self._pick(pick)
        a = s.pin(i, pinned)
        assert a.id == i and a.pinned == pinned
        self.live[i].pinned = pinned

    # -- maintenance --------------------------------------------------------------------

    @rule(h=handle_st)
    def compact(self, h: int) -> None:
        self._h(h)[1].compact()

    @rule(h=handle_st)
    def gc(self, h: int) -> None:
        rep = self._h(h)[1].gc(grace=0, dry_run=False)
        assert not set(rep.deleted) & self._needed(), "gc deleted a live blob"

    @rule(
        h=handle_st,
        kind=st.sampled_from(KINDS),
        mode=st.sampled_from(["max", "min"]),
        k=st.integers(0, 2),
        per=st.sampled_from([None, "run"]),
        grace0=st.booleans(),
    )
    def keep_best(
        self, h: int, kind: str, mode: str, k: int, per: str | None, grace0: bool
    ) -> None:
        _, s = self._h(h)
        want = expected_keep_best(self.live, kind, mode, k, per)
        kw: dict[str, Any] = {"grace": 0} if grace0 else {}
        rep = s.keep_best(kind=kind, metric="m", mode=mode, k=k, per=per, dry_run=False, **kw)
        got = set(rep.deleted)
        assert not {i for i in got if i in self.live and self.live[i].pinned}, "pinned deleted"
        assert got == want, (sorted(got - want), sorted(want - got))
        self._forget(got)
        assert not set(rep.gc.deleted) & self._needed(), "keep_best's gc deleted a live blob"

    @rule(h=handle_st)
    def reopen(self, h: int) -> None:
        i, s = self._h(h)
        durability = s.durability
        s.close()
        self.handles[i] = runstash.Store(self.root, durability=durability)

    # -- damage -------------------------------------------------------------------------

    def _damageable(self) -> list[str]:
        """Large hashes a live record names whose bytes are there (a blob file each)."""
        return sorted({r.hash for r in self.live.values()} & LARGE_HASHES - self.unavailable)

    @precondition(lambda self: self._damageable())
    @rule(
        h=handle_st,
        pick=pick_st,
        how=st.sampled_from(["flip", "truncate"]),
        detect=st.sampled_from(["verify", "read", "report"]),
    )
    def damage_then_detect(self, h: int, pick: int, how: str, detect: str) -> None:
        _, s = self._h(h)
        cands = self._damageable()
        digest = cands[pick % len(cands)]
        p = blob_path(self.root, digest)
        assert p.is_file(), f"a live large blob has no file: {p}"
        damaged = damage(p, how)
        if detect == "verify":
            assert s.verify(digest) is False
        elif detect == "read":
            with pytest.raises(CorruptError):
                s.read_bytes(digest, verify=True)
        else:
            rep = s.verify_report()
            assert digest in {c.hash for c in rep.corrupt}, rep.corrupt
        assert not os.path.lexists(p), f"the damaged blob stayed in blobs/ after {detect}"
        assert_quarantined(self.root, damaged, detect)
        self.unavailable.add(digest)

    @precondition(lambda self: any(blob_path(self.root, h).is_file() for h in LARGE_HASHES))
    @rule(
        h=handle_st,
        pick=pick_st,
        how=st.sampled_from(["flip", "truncate"]),
        write=st.sampled_from(WRITE_PATHS),
    )
    def damage_then_rewrite(self, h: int, pick: int, how: str, write: str) -> None:
        """A damaged blob file (live or an orphan) and then the same bytes written again: the
        write must not dedup onto the damage."""
        i, s = self._h(h)
        cands = sorted(d for d in LARGE_HASHES if blob_path(self.root, d).is_file())
        digest = cands[pick % len(cands)]
        damaged = damage(blob_path(self.root, digest), how)
        data = BYTES_OF[digest]
        art = write_via(s, data, write, self.src, kind="a", run_id="r1")
        origin = f"{write} by handle {i} after {how} of its blob file at step {self.steps}"
        self._add(art, Rec(digest, "a", "r1", None, False, origin))
        try:
            got = s.read_bytes(art, verify=True)
        except runstash.RunstashError as e:
            msg = f"a write after damage ({origin}) does not read back: {e!r}"
            raise AssertionError(msg) from e
        assert got == data
        assert_quarantined(self.root, damaged, f"{write} of the same bytes")

    # -- the checks ---------------------------------------------------------------------

    @invariant()
    def every_live_record_reads_back_everywhere(self) -> None:
        faulthandler.dump_traceback_later(STEP_TIMEOUT, exit=True)
        if not self.handles:
            return
        self.steps += 1
        for j, s in enumerate(self.handles):
            self._read_back(f"handle {j}", s)
        if self.steps % FRESH_EVERY == 0:
            self._check_fresh_handle()


def test_lifecycle_model_in_process(tmp_path: Path) -> None:
    LifecycleMachine.base = tmp_path
    examples = max(1, round(STEPS / STEPS_PER_EXAMPLE))
    try:
        run_state_machine_as_test(
            LifecycleMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=STEPS_PER_EXAMPLE,
                deadline=None,
                derandomize=_SEED_ENV is None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        faulthandler.cancel_dump_traceback_later()


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
