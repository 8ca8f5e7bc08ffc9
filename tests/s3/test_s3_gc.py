"""gc, stats, verify_report and keep_best on an S3 store (SeaweedFS on loopback).

- gc marks unreferenced blob objects, and a gc after the safety interval deletes them; a blob
  recorded again in between is kept (its writer copies it to a key no marker names);
- one process runs gc in a loop while 4 writer processes write and delete artifacts whose
  contents repeat (so writers keep relying on objects that gc has marked): afterwards every
  live record's bytes are in the bucket and verify_report finds nothing missing;
- stats and verify_report see orphans, damage and stray objects; keep_best deletes the
  losers' records.

The protocol is defined by elapsed time (a mark becomes due 1.25 times the gc lease plus 1 s
after it was written, by the bucket's clock): these tests use a lease of 0.4 s and let that
time pass with `time.sleep`; nothing asynchronous is waited for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.conftest import spawn_python
from tests.s3.seaweed import Seaweed
from tests.s3.test_s3_store import open_store

LEASE = 0.4
BIG = 100_000  # over pack_max: a blob object of its own


def let_marks_become_due() -> None:
    # 1.25 lease + 1 s, plus 1 s more: the bucket keeps whole seconds, so "now" reads low
    time.sleep(LEASE * 1.25 + 2.1)


def blob_keys(sw: Seaweed, bucket: str) -> list[str]:
    pages = sw.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return sorted(k for k in keys if "/blobs/" in k)


def test_gc_marks_then_deletes(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    keep = s.put_bytes(os.urandom(BIG), kind="k")
    gone = s.put_bytes(os.urandom(BIG), kind="k")
    small = s.put_bytes(b"packed", kind="k")  # packed in a segment: not gc's business
    s.delete(gone.id)
    s.delete(small.id)
    assert len(blob_keys(seaweed, bucket)) == 2
    assert s.stats().orphan_blobs == 1

    dry = s.gc(dry_run=True, grace=0)
    assert (dry.pending, dry.deleted) == (1, ())
    first = s.gc(dry_run=False, grace=0)
    assert (first.pending, first.pending_bytes, first.deleted) == (1, BIG, ())
    assert len(blob_keys(seaweed, bucket)) == 2, "marked, not deleted"
    again = s.gc(dry_run=False, grace=0)
    assert (again.pending, again.deleted) == (1, ()), "the mark is not due yet"

    let_marks_become_due()
    # Any process may sweep: a fresh handle with its own cache.
    other = open_store(seaweed, bucket, tmp_path / "o")
    swept = other.gc(dry_run=False, grace=0)
    assert swept.deleted == (gone.hash,) and swept.deleted_bytes == BIG
    assert swept.pending == 0
    assert blob_keys(seaweed, bucket) == [keep.uri.removeprefix(f"s3://{bucket}/")]
    assert other.read_bytes(keep, verify=True)
    report = other.verify_report()
    assert report.ok and not report.orphaned

    # grace: a fresh orphan is only counted
    young = s.put_bytes(os.urandom(BIG), kind="k")
    s.delete(young.id)
    r = s.gc(dry_run=False, grace=3600)
    assert (r.recent, r.pending, r.deleted) == (1, 0, ())
    s.close()
    other.close()


def test_a_blob_recorded_again_after_its_mark_is_kept(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    first = s.put_bytes(data, kind="k")
    primary = first.uri.removeprefix(f"s3://{bucket}/")
    s.delete(first.id)
    assert s.gc(dry_run=False, grace=0).pending == 1

    # Another machine writes the same bytes: the primary key is marked, so it relies on a
    # copy under a new key instead.
    w = open_store(seaweed, bucket, tmp_path / "w")
    again = w.put_bytes(data, kind="k")
    keys = blob_keys(seaweed, bucket)
    assert primary in keys and len(keys) == 2
    assert all(k.startswith(primary) for k in keys)

    let_marks_become_due()
    r = s.gc(dry_run=False, grace=0)
    assert r.deleted == () and r.revived == 1, "live again: kept"
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    assert fresh.read_bytes(again, verify=True) == data

    # Once deleted for good, both keys go; the copy is read while the primary is gone.
    w.delete(again.id)
    assert s.gc(dry_run=False, grace=0).pending == 2
    let_marks_become_due()
    assert len(s.gc(dry_run=False, grace=0).deleted) == 2
    assert blob_keys(seaweed, bucket) == []
    third = w.put_bytes(data, kind="k")
    assert blob_keys(seaweed, bucket) == [primary], "no mark left: the primary key again"
    assert fresh.read_bytes(third, verify=True) == data
    for st in (s, w, fresh):
        st.close()


def test_a_copy_is_read_when_the_primary_key_is_gone(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    a = s.put_bytes(data, kind="k")
    s.delete(a.id)
    s.gc(dry_run=False, grace=0)
    b = open_store(seaweed, bucket, tmp_path / "w").put_bytes(data, kind="k")
    primary = a.uri.removeprefix(f"s3://{bucket}/")
    seaweed.client().delete_object(Bucket=bucket, Key=primary)
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    assert fresh.read_bytes(b, verify=True) == data
    assert fresh.exists(b)
    assert fresh.verify_report().ok
    s.close()
    fresh.close()


WRITER = r"""
import json, os, random, sys
import runstash
endpoint, key, secret, url, cache, w, n, durability, out = sys.argv[1:10]
w, n = int(w), int(n)
s = runstash.Store(url, durability=durability, s3=runstash.S3Options(
    endpoint=endpoint, access_key_id=key, secret_access_key=secret, region="us-east-1",
    cache_dir=cache))
rng = random.Random(w)
# A small pool of contents shared by all writers: records come and go, so gc keeps marking
# objects that writers then record again.
pool = [random.Random(k).randbytes(100_000) for k in range(40)]
live = []
for i in range(n):
    k = rng.randrange(len(pool))
    a = s.put_bytes(pool[k], kind="g", labels={"w": w, "k": k})
    live.append((a.id, a.hash))
    if len(live) > 3:
        victim = live.pop(rng.randrange(len(live)))
        s.delete(victim[0])
s.close()
with open(out, "w") as f:
    json.dump(live, f)
"""


def test_gc_while_four_writers_write(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs"
    gc_store = open_store(seaweed, bucket, tmp_path / "gc", gc_lease=LEASE)
    outs = [tmp_path / f"w{w}.json" for w in range(4)]
    procs = [
        spawn_python(
            WRITER,
            seaweed.endpoint,
            seaweed.access_key,
            seaweed.secret_key,
            url,
            str(tmp_path / f"cache{w}"),
            str(w),
            "150",
            "os" if w == 3 else "fsync",
            str(outs[w]),
        )  # fmt: skip
        for w in range(4)
    ]
    deadline = time.monotonic() + 300  # watchdog
    deleted = pending = runs = 0
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "writers did not finish"
        r = gc_store.gc(dry_run=False, grace=0)
        deleted += len(r.deleted)
        pending = max(pending, r.pending)
        runs += 1
    for w, p in enumerate(procs):
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"writer {w}: {err.decode()[-3000:]}"
    assert runs > 3 and pending > 0, "gc ran and marked while the writers wrote"
    # Let the last marks come due and sweep once more, as an operator's next run would.
    let_marks_become_due()
    deleted += len(gc_store.gc(dry_run=False, grace=0).deleted)
    assert deleted > 0, "gc deleted something while writers relied on the same contents"

    written = {i: h for out in outs for i, h in json.loads(out.read_text())}
    reader = open_store(seaweed, bucket, tmp_path / "reader")
    arts = {a.id: a for a in reader.list(kind="g")}
    assert {i: a.hash for i, a in arts.items()} == written
    for a in arts.values():
        assert reader.read_bytes(a, verify=True)
    report = reader.verify_report()
    assert report.missing == () and report.corrupt == (), report
    gc_store.close()
    reader.close()


def test_stats_verify_and_keep_best(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    arts = [
        s.put_bytes(os.urandom(BIG), kind="m", metrics={"acc": i / 10}, run_id="r")
        for i in range(5)
    ]
    s.put_bytes(b"small", kind="note")
    st = s.stats()
    assert (st.records, st.blob_count, st.disk_blobs, st.orphan_blobs) == (6, 6, 5, 0)
    assert st.live_bytes == 5 * BIG + 5 and st.missing_blobs == 0 and st.index_bytes > 0
    client = seaweed.client()
    client.put_object(Bucket=bucket, Key="runs/blobs/README.txt", Body=b"hello")
    bad = arts[0].uri.removeprefix(f"s3://{bucket}/")
    client.put_object(Bucket=bucket, Key=bad, Body=os.urandom(BIG))
    seen: list[tuple[int, int]] = []
    rep = s.verify_report(lambda done, total, b, tb: seen.append((done, total)))
    assert [c.hash for c in rep.corrupt] == [arts[0].hash]
    assert rep.stray == (f"s3://{bucket}/runs/blobs/README.txt",)
    assert rep.corrupt[0].path == arts[0].uri
    assert rep.checked == 6 and rep.missing == ()
    assert seen and seen[-1][0] == seen[-1][1]
    assert s.verify().ok is False
    assert s.stats().stray_files == 1

    plan = s.keep_best(kind="m", metric="acc", mode="max", k=2, dry_run=True)
    assert set(plan.deleted) == {a.id for a in arts[:3]} and plan.gc.pending == 0
    s.pin(arts[0].id)
    done = s.keep_best(kind="m", metric="acc", mode="max", k=2, dry_run=False, grace=0)
    assert set(done.deleted) == {a.id for a in arts[1:3]}
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    assert {a.id for a in fresh.list(kind="m")} == {arts[0].id, arts[3].id, arts[4].id}
    assert done.gc.pending == 2, "the losers' blobs are marked for the next gc"
    client.delete_object(Bucket=bucket, Key=arts[4].uri.removeprefix(f"s3://{bucket}/"))
    fresh_rep = open_store(seaweed, bucket, tmp_path / "g").verify_report()
    assert [m.hash for m in fresh_rep.missing] == [arts[4].hash]
    assert fresh_rep.missing[0].records == (arts[4].id,)
    s.close()
    fresh.close()
