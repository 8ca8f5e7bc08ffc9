"""The S3 gc protocol against the races a hostile review found (SeaweedFS on loopback): each
test is a schedule of writers, pins and gcs that lost an acknowledged blob, stopped writers
or made gc fail before the fix. Timing as in test_s3_gc.py (lease 0.4 s, time let pass with
`time.sleep` where the protocol is defined by elapsed time)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import runstash
from runstash import S3Options
from tests.s3.seaweed import Seaweed
from tests.s3.slow_proxy import SlowProxy
from tests.s3.test_s3_gc import BIG, LEASE, blob_keys, let_marks_become_due
from tests.s3.test_s3_store import open_store


def live_and_readable(sw: Seaweed, bucket: str, cache: Path) -> None:
    """A fresh reader can read every live record's bytes, and verify finds nothing missing."""
    fresh = open_store(sw, bucket, cache)
    for a in fresh.list():
        assert fresh.read_bytes(a, verify=True) is not None
    assert fresh.verify_report().missing == ()
    fresh.close()


def test_objects_under_gc_that_are_not_markers_are_ignored(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    c = seaweed.client()
    c.put_object(Bucket=bucket, Key="runs/gc/2024-notes.json", Body=b"hello")
    c.put_object(Bucket=bucket, Key="runs/gc/0000000000000001-" + "a" * 32 + ".json", Body=b"{")
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    s.gc(dry_run=False, grace=0)
    a = s.put_bytes(os.urandom(BIG), kind="k")
    assert s.exists(a)


def test_each_gc_writes_its_own_marker(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    for _ in range(3):  # three gcs within a second or two: names must not collide
        a = s.put_bytes(os.urandom(BIG), kind="k")
        s.delete(a.id)
        assert s.gc(dry_run=False, grace=0).pending >= 1
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    markers = [o["Key"] for p in pages for o in p.get("Contents", []) if "/gc/" in o["Key"]]
    assert len(markers) == 3, markers
    assert s.gc(dry_run=True, grace=0).pending == 3


def test_concurrent_gcs_on_one_handle(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    s.put_bytes(os.urandom(BIG), kind="k")
    errors: list[str] = []

    def loop() -> None:
        for _ in range(15):
            try:
                s.gc(dry_run=False, grace=0)
            except runstash.RunstashError as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]


def test_a_failed_write_is_reported_once(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(
        seaweed, bucket, tmp_path / "s", gc_lease=LEASE, max_retries=0, request_timeout=2.0
    )
    s.put_bytes(b"ok", kind="k")
    seaweed.kill_volume()
    try:
        with pytest.raises(runstash.StoreIOError):
            s.put_bytes(b"small packed", kind="k")
    finally:
        seaweed.start_volume()
    # The server is back: nothing is pending, and nothing re-raises the old failure.
    s.flush()
    s.gc(dry_run=False, grace=0)
    s.compact()
    s.close()


def test_a_pin_never_revives_a_record_whose_blob_was_swept(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    w = open_store(seaweed, bucket, tmp_path / "w", gc_lease=LEASE)
    a = w.put_bytes(os.urandom(BIG), kind="k")
    y = open_store(seaweed, bucket, tmp_path / "y", max_staleness=60.0)
    assert y.get(a.id) is not None  # y's view has the record, and keeps it for a minute
    w.delete(a.id)
    g = open_store(seaweed, bucket, tmp_path / "g")
    assert g.gc(dry_run=False, grace=0).pending == 1
    let_marks_become_due()
    assert len(g.gc(dry_run=False, grace=0).deleted) == 1
    with pytest.raises(runstash.NotFoundError):
        y.pin(a.id)  # it would bring back a record whose bytes are gone
    live_and_readable(seaweed, bucket, tmp_path / "f")


def test_a_buffered_pin_after_a_sweep_fails_its_flush(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    x = open_store(seaweed, bucket, tmp_path / "x", gc_lease=LEASE)
    a = x.put_bytes(os.urandom(BIG), kind="k")
    y = open_store(seaweed, bucket, tmp_path / "y", durability="os")
    y.list(kind="k")
    x.delete(a.id)
    y.pin(a.id)  # y has not seen the delete; buffered
    g = open_store(seaweed, bucket, tmp_path / "g")
    assert g.gc(dry_run=False, grace=0).pending == 1
    let_marks_become_due()
    assert len(g.gc(dry_run=False, grace=0).deleted) == 1
    with pytest.raises(runstash.NotFoundError, match="no longer in the bucket"):
        y.flush()
    with pytest.raises(runstash.NotFoundError):
        y.close()  # still not storable: said again by the call that tried, then closed
    y.close()
    live_and_readable(seaweed, bucket, tmp_path / "f")


def test_a_blob_kept_only_as_a_copy_is_found(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=LEASE)
    data = os.urandom(BIG)
    a = s.put_bytes(data, kind="k")
    s.delete(a.id)
    assert s.gc(dry_run=False, grace=0).pending == 1
    let_marks_become_due()
    w = open_store(seaweed, bucket, tmp_path / "w", durability="os")
    b = w.put_bytes(data, kind="k")  # primary marked: w relies on a copy; record buffered
    s.gc(dry_run=False, grace=3600)  # sweeps the primary (the copy is too young to mark)
    assert len(blob_keys(seaweed, bucket)) == 1
    w.flush()  # re-confirms the blob: found as the copy
    assert w.exists(b)
    assert open_store(seaweed, bucket, tmp_path / "f").exists(b)
    live_and_readable(seaweed, bucket, tmp_path / "r")


def test_an_upload_answered_after_its_sweep_is_uploaded_again(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    g = open_store(seaweed, bucket, tmp_path / "g", gc_lease=LEASE)
    proxy = SlowProxy(seaweed.endpoint)
    opts = S3Options(
        endpoint=proxy.endpoint,
        region=seaweed.region,
        access_key_id=seaweed.access_key,
        secret_access_key=seaweed.secret_key,
        cache_dir=tmp_path / "w",
    )
    w = runstash.Store(f"s3://{bucket}/runs", s3=opts)
    data = os.urandom(BIG)
    proxy.hold(6.0, lambda method, path: method == "PUT" and "/blobs/" in path)
    out: dict[str, runstash.Artifact] = {}
    t = threading.Thread(target=lambda: out.setdefault("a", w.put_bytes(data, kind="k")))
    t.start()
    assert proxy.held.wait(timeout=60), "the blob upload reached the server"
    assert g.gc(dry_run=False, grace=0).pending == 1  # stored, not yet recorded: marked
    let_marks_become_due()
    assert len(g.gc(dry_run=False, grace=0).deleted) == 1  # and swept
    t.join(timeout=120)
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    assert fresh.read_bytes(out["a"], verify=True) == data  # acknowledged: readable
    proxy.close()
