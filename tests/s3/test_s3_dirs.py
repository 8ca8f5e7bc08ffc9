"""Staged files, record_many and directory artifacts on an S3 store (SeaweedFS on loopback):
the same calls as on a local store; staging lives in the local cache, and gc keeps the files
of a live directory artifact and reclaims them once it is deleted."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

import runstash
from tests.s3.seaweed import Seaweed
from tests.s3.test_s3_gc import BIG, blob_keys, let_marks_become_due
from tests.s3.test_s3_store import open_store


def test_stage_ingest_and_record_many(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s")
    staged = Path(s.stage(".bin"))
    assert staged.is_relative_to(tmp_path / "s"), "staging is in the cache"
    data = os.urandom(BIG)
    staged.write_bytes(data)
    a = s.ingest(staged, kind="frame", run_id="r")
    assert not staged.exists(), "the staged file goes once it is uploaded"
    (tmp_path / "elsewhere.bin").write_bytes(b"mine")
    with pytest.raises(runstash.InvalidArgumentError):
        s.ingest(tmp_path / "elsewhere.bin")  # not from stage()
    assert (tmp_path / "elsewhere.bin").read_bytes() == b"mine"
    small = Path(s.stage(".txt"))
    small.write_bytes(b"tiny")
    b = s.ingest(small, kind="note")
    many = s.record_many(a, [{"kind": "alias", "labels": {"i": i}} for i in range(3)])
    many += s.record_many(b.hash, [{"kind": "alias"}])
    assert [m.hash for m in many] == [a.hash] * 3 + [b.hash]
    with pytest.raises(runstash.NotFoundError):
        s.record_many("blake3:" + "0" * 64, [{"kind": "x"}])
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    assert fresh.count(kind="alias") == 4
    assert fresh.read_bytes(many[0], verify=True) == data
    assert fresh.read_bytes(many[3]) == b"tiny"
    s.close()
    fresh.close()


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(BIG), "sub/deeper/c": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_directory_artifacts_and_gc(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s", gc_lease=0.4)
    staged = Path(s.stage_dir())
    files = make_tree(staged)
    d = s.ingest_dir(staged, kind="dataset", run_id="r")
    assert not staged.exists()
    assert d.mime == runstash.TREE_MIME and d.kind == "dataset"
    fresh = open_store(seaweed, bucket, tmp_path / "f")
    out = Path(fresh.dir_of(d))
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files
    assert not os.access(out, os.W_OK) or not stat.S_IMODE(out.stat().st_mode) & 0o222
    assert fresh.verify_report().ok

    # gc keeps the files of the live directory ...
    assert s.gc(dry_run=False, grace=0).pending == 0
    # ... and reclaims them once it is deleted
    s.delete(d.id)
    assert s.gc(dry_run=False, grace=0).pending == 3
    let_marks_become_due()
    assert len(s.gc(dry_run=False, grace=0).deleted) == 3
    assert blob_keys(seaweed, bucket) == []
    s.close()
    fresh.close()


def test_facade_file_calls_on_s3(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s")
    fac = runstash.ArtifactFacade(s, run_id="r")

    async def go() -> tuple[runstash.Artifact, runstash.Artifact]:
        staged = await fac.stage("out.txt")
        Path(staged).write_bytes(b"x" * 10)
        one = await fac.ingest(staged, kind="k")
        tree = Path(await fac.stage_dir())
        make_tree(tree)
        many = await fac.ingest_dir(str(tree), kind="dir")
        return one, many

    one, many = asyncio.run(go())
    assert s.read_bytes(one) == b"x" * 10 and one.run_id == "r"
    assert many.mime == runstash.TREE_MIME
    s.close()
