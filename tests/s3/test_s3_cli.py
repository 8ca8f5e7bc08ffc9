"""The ``runstash`` command on an S3 store (``--store s3://bucket/prefix``), as a real process:
the same subcommands as on a local store, the S3 settings from ``--s3-*`` flags and ``AWS_*``
variables, and no store ever created (nor anything written) by a command that only looks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import runstash
from tests.s3.seaweed import Seaweed
from tests.s3.test_s3_gc import BIG, blob_keys
from tests.s3.test_s3_store import open_store, options


def cli(sw: Seaweed, cache: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "COLUMNS": "100",
        "AWS_ACCESS_KEY_ID": sw.access_key,
        "AWS_SECRET_ACCESS_KEY": sw.secret_key,
    }
    flags = ["--s3-endpoint", sw.endpoint, "--s3-region", sw.region, "--s3-cache-dir", str(cache)]
    return subprocess.run(
        [sys.executable, "-m", "runstash", *args, *flags],
        capture_output=True,
        timeout=300,
        env=env,
    )


def ok_json(sw: Seaweed, cache: Path, *args: str) -> object:
    p = cli(sw, cache, *args, "--json")
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def all_keys(sw: Seaweed, bucket: str) -> list[str]:
    pages = sw.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_every_subcommand_on_an_s3_store(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs"
    s = open_store(seaweed, bucket, tmp_path / "w", gc_lease=0.4)
    m1 = s.put_bytes(b"model one", kind="model", metrics={"acc": 0.7}, run_id="r1")
    m2 = s.put_bytes(os.urandom(BIG), kind="model", metrics={"acc": 0.9}, run_id="r1")
    m3 = s.put_bytes(os.urandom(BIG), kind="model", metrics={"acc": 0.8}, run_id="r2")
    s.close()
    cache = tmp_path / "cli-cache"
    before = all_keys(seaweed, bucket)

    ls = ok_json(seaweed, cache, "ls", "--store", url, "--kind", "model")
    assert [a["id"] for a in ls] == [m1.id, m2.id, m3.id]
    assert ok_json(seaweed, cache, "best", "--store", url, "--metric", "acc")["id"] == m2.id
    assert ok_json(seaweed, cache, "show", m3.id, "--store", url)["hash"] == m3.hash
    cat = cli(seaweed, cache, "cat", m1.id, "--store", url, "--verify")
    assert cat.returncode == 0 and cat.stdout == b"model one"
    stats = ok_json(seaweed, cache, "stats", "--store", url)
    assert stats["records"] == 3 and stats["disk_blobs"] == 2
    assert cli(seaweed, cache, "verify", "--store", url).returncode == 0
    assert all_keys(seaweed, bucket) == before, "looking wrote nothing"
    out = tmp_path / "all.parquet"
    assert cli(seaweed, cache, "export", "--parquet", str(out), "--store", url).returncode == 0
    assert out.stat().st_size > 0

    # keep-best deletes the loser's record; gc marks its blob, a later gc deletes it
    kb = ok_json(
        seaweed, cache, "keep-best", "--store", url, "--kind", "model", "--metric", "acc",
        "--mode", "max", "--k", "2", "--yes", "--grace", "0",
    )  # fmt: skip
    assert kb["deleted"] == [m1.id]
    ok_json(seaweed, cache, "ls", "--store", url)
    runstash.Store(url, s3=options(seaweed, tmp_path / "x")).delete(m3.id)
    gc1 = ok_json(seaweed, cache, "gc", "--store", url, "--yes", "--grace", "0")
    assert gc1["pending"] == 1 and gc1["deleted"] == []
    text = cli(seaweed, cache, "gc", "--store", url, "--grace", "0")
    assert b"marked unreferenced" in text.stdout


def test_no_store_at_an_s3_prefix_exits_3_and_writes_nothing(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    for cmd in (["ls"], ["stats"], ["verify"], ["gc", "--yes"]):
        p = cli(seaweed, tmp_path / "c", *cmd, "--store", f"s3://{bucket}/nothing")
        assert p.returncode == 3, p.stderr
        assert b"no runstash store" in p.stderr
    assert all_keys(seaweed, bucket) == []
    assert blob_keys(seaweed, bucket) == []
