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
- ``test_lifecycle_model_processes`` (in ``test_lifecycle_processes.py``): a seeded random
  walk with three real child processes that run seeded scripts of writes (all five paths),
  record_many, deletes, pins, compactions, gc at the default grace and verified read-backs
  concurrently, round after round, and report what was acknowledged (JSON lines on stdout);
  between rounds the parent compacts, collects with ``grace=0``, applies ``keep_best``,
  damages and detects, and checks every acknowledged live record (its own handle, a fresh
  handle, verify_report).

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
import shutil
import sys
import tempfile
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
from tests.facade_helpers import run
from tests.lifecycle_model import (
    _SEED_ENV,
    BYTES_OF,
    FRESH_EVERY,
    HASH_OF,
    KINDS,
    LARGE_HASHES,
    POOL,
    SMALL,
    STEP_TIMEOUT,
    STEPS,
    STEPS_PER_EXAMPLE,
    WRITE_PATHS,
    Rec,
    assert_quarantined,
    blob_path,
    check_quarantine_accounting,
    damage,
    expected_keep_best,
    handle_st,
    meta_st,
    pick_st,
    quarantine_files,
    write_via,
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
