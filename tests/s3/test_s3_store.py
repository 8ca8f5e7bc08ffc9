"""runstash.Store("s3://...") against a real S3 server (SeaweedFS on loopback, see seaweed.py).

- many writer processes, each with its own local cache, write into one bucket; a fresh reader
  sees every record, and best() agrees with a full scan;
- a volume server killed mid-upload: every write either fails with a clear error or completes,
  and no record ever names a blob the bucket lacks;
- the conflict rule for pins and deletes from different writers, buffered writes, snapshots,
  corruption in the bucket, and bad settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import runstash
from runstash import S3Options
from tests.conftest import spawn_python
from tests.s3.seaweed import Seaweed

WRITERS = 4
WRITES = int(os.environ.get("RUNSTASH_S3_WRITES", "2000"))


def options(sw: Seaweed, cache: Path, **kw: Any) -> S3Options:  # noqa: ANN401
    return S3Options(
        endpoint=sw.endpoint,
        region=sw.region,
        access_key_id=sw.access_key,
        secret_access_key=sw.secret_key,
        cache_dir=cache,
        **kw,
    )


def open_store(sw: Seaweed, bucket: str, cache: Path, **kw: Any) -> runstash.Store:  # noqa: ANN401
    durability = kw.pop("durability", "fsync")
    return runstash.Store(f"s3://{bucket}/runs", durability=durability, s3=options(sw, cache, **kw))


WRITER = r"""
import json, os, random, sys
import runstash
from concurrent.futures import ThreadPoolExecutor
endpoint, key, secret, url, cache, w, n, out = sys.argv[1:9]
w, n = int(w), int(n)
s = runstash.Store(url, s3=runstash.S3Options(
    endpoint=endpoint, access_key_id=key, secret_access_key=secret, region="us-east-1",
    cache_dir=cache))
rng = random.Random(w)

def one(i):
    # mostly 1 KiB (packed into index segments), every 50th 100 KiB (a blob object)
    size = 100 * 1024 if i % 50 == 0 else 1024
    data = rng.randbytes(size - 16) + i.to_bytes(8, "big") + w.to_bytes(8, "big")
    a = s.put_bytes(data, kind="sample", labels={"writer": w, "even": i % 2 == 0},
                    metrics={"score": rng.random()}, run_id=f"run-{w}")
    return a.id, a.hash

with ThreadPoolExecutor(8) as pool:  # concurrent writes share segment uploads
    done = list(pool.map(one, range(n)))
s.close()
with open(out, "w") as f:
    json.dump(done, f)
"""


@pytest.mark.slow
def test_writers_on_many_caches_one_bucket(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs"
    outs = [tmp_path / f"w{w}.json" for w in range(WRITERS)]
    procs = [
        spawn_python(
            WRITER,
            seaweed.endpoint,
            seaweed.access_key,
            seaweed.secret_key,
            url,
            str(tmp_path / f"cache{w}"),
            str(w),
            str(WRITES),
            str(outs[w]),
        )  # fmt: skip
        for w in range(WRITERS)
    ]
    for w, p in enumerate(procs):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"writer {w}: {err.decode()[-3000:]}"
    written = {i: h for out in outs for i, h in json.loads(out.read_text())}
    assert len(written) == WRITERS * WRITES

    reader = open_store(seaweed, bucket, tmp_path / "reader-cache")
    arts = reader.list(kind="sample")
    assert len(arts) == WRITERS * WRITES
    assert {a.id: a.hash for a in arts} == written
    # best() from the merged index agrees with a scan, overall and within a scope/label
    scan = max(arts, key=lambda a: a.metrics["score"])
    assert reader.best(kind="sample", metric="score", mode="max").id == scan.id
    for w in range(WRITERS):
        mine = [a for a in arts if a.labels["writer"] == w and a.labels["even"]]
        want = min(mine, key=lambda a: a.metrics["score"])
        got = reader.best(
            kind="sample", metric="score", mode="min", run_id=f"run-{w}", labels={"even": True}
        )
        assert got is not None and got.id == want.id
    # bytes come back from the bucket (packed and blob objects alike), checked
    rng = random.Random(7)
    for a in rng.sample(arts, 40) + [a for a in arts if a.size > 4096][:5]:
        data = reader.read_bytes(a, verify=True)
        assert runstash.hash_bytes(data) == a.hash and len(data) == a.size
    reader.close()


KILLED = r"""
import os, sys
import runstash
endpoint, key, secret, url, cache, src_dir, n = sys.argv[1:8]
s = runstash.Store(url, s3=runstash.S3Options(
    endpoint=endpoint, access_key_id=key, secret_access_key=secret, region="us-east-1",
    cache_dir=cache, max_retries=1, request_timeout=10.0))
for i in range(int(n)):
    src = os.path.join(src_dir, f"f{i}.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(24 << 20) if i % 2 == 0 else os.urandom(900))
    print(f"start {i}", flush=True)
    try:
        a = s.save(src, kind="upload", labels={"i": i})
        print(f"ok {i} {a.id} {a.hash}", flush=True)
    except runstash.RunstashError as e:
        print(f"fail {i} {type(e).__name__}", flush=True)
        print(f"{i}: {e}", file=sys.stderr, flush=True)
s.close()
"""


@pytest.mark.slow
def test_volume_server_killed_mid_upload(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs"
    (tmp_path / "src").mkdir()
    p = spawn_python(
        KILLED, seaweed.endpoint, seaweed.access_key, seaweed.secret_key, url,
        str(tmp_path / "cache"), str(tmp_path / "src"), "8",
    )  # fmt: skip
    assert p.stdout is not None
    lines = []
    killed = False
    try:
        for raw in p.stdout:
            line = raw.decode().strip()
            lines.append(line)
            # Kill the volume server while the third write (24 MiB, multipart) is going up.
            if line == "start 2" and not killed:
                seaweed.kill_volume()
                killed = True
            if line.startswith(("ok 4", "fail 4")) and killed:
                seaweed.start_volume()
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
        seaweed.start_volume()  # whatever happened, the next tests get a whole cluster
    err = p.stderr.read().decode() if p.stderr else ""
    assert p.returncode == 0, err[-3000:]
    results = [ln for ln in lines if ln.startswith(("ok", "fail"))]
    assert len(results) == 8, lines
    failed = [ln for ln in results if ln.startswith("fail")]
    assert failed, f"no write failed while the volume server was down: {lines}"
    assert all(ln.split()[2] == "StoreIOError" for ln in failed), err[-3000:]
    ok = {ln.split()[2]: ln.split()[3] for ln in results if ln.startswith("ok")}

    reader = open_store(seaweed, bucket, tmp_path / "reader-cache")
    arts = reader.list(kind="upload")
    # every write reported ok is there; a failed write may be there only if it completed
    assert ok.keys() <= {a.id for a in arts}
    for a in arts:
        assert reader.exists(a), f"record {a.id} names a blob the bucket lacks"
        data = reader.read_bytes(a, verify=True)
        assert runstash.hash_bytes(data) == a.hash
    reader.close()


def test_conflict_rule_last_writer_wins(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    """Pins and deletes from different writers: the operation made later in the hybrid
    logical clock wins, and an operation made after seeing another is always later."""
    a = open_store(seaweed, bucket, tmp_path / "a", max_staleness=3600)
    b = open_store(seaweed, bucket, tmp_path / "b", max_staleness=3600)
    x = a.put_bytes(b"x", kind="m")
    y = a.put_bytes(b"y", kind="m")
    b.refresh()
    b.pin(x.id)
    b.pin(y.id)
    a.refresh()  # a has seen b's pins: what it does next wins
    a.delete(x.id)
    a.pin(y.id, False)
    # b has not refreshed yet and still sees its own pins
    assert b.get(x.id) is not None and b.get(y.id).pinned
    for s in (a, b, open_store(seaweed, bucket, tmp_path / "c")):
        s.refresh()
        assert s.get(x.id) is None, "the delete made after the pin wins"
        assert s.get(y.id) is not None and not s.get(y.id).pinned
    # A pin made after seeing the delete brings nothing back: the record is gone for b too.
    with pytest.raises(runstash.NotFoundError):
        b.pin(x.id)
    a.close()
    b.close()


def test_buffered_writes_flush_on_close(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    w = open_store(seaweed, bucket, tmp_path / "w", durability="os")
    r = open_store(seaweed, bucket, tmp_path / "r", max_staleness=0)
    ids = [w.put_bytes(b"%d" % i, kind="buf").id for i in range(10)]
    assert w.count(kind="buf") == 10, "buffered writes are visible to their writer at once"
    assert r.count(kind="buf") == 0, "and to nobody else before they are uploaded"
    w.flush()
    assert r.count(kind="buf") == 10
    more = w.put_bytes(b"last", kind="buf")
    w.close()
    assert {a.id for a in r.list(kind="buf")} == {*ids, more.id}
    r.close()


def test_compaction_keeps_everything(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "s")
    other = open_store(seaweed, bucket, tmp_path / "o")
    ids = [s.put_bytes(b"a%d" % i, kind="c", metrics={"m": i}).id for i in range(20)]
    ids += [other.put_bytes(os.urandom(70_000), kind="c", metrics={"m": -1}).id]
    s.pin(ids[3])
    s.delete(ids[4])
    s.refresh()  # other's record too
    before = {a.id: (a.hash, a.pinned) for a in s.list()}
    assert len(before) == 20
    s.compact()
    client = seaweed.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if "/log/" in k], "segments went into the snapshot"
    assert len([k for k in keys if "/snap/" in k]) == 1
    fresh = open_store(seaweed, bucket, tmp_path / "fresh")
    assert {a.id: (a.hash, a.pinned) for a in fresh.list()} == before
    assert fresh.best(kind="c", metric="m", mode="max").id == ids[19]
    assert fresh.read_bytes(ids_hash(fresh, ids[0])) == b"a0"
    # a writer that opened before the compaction keeps working and is seen by new readers
    late = other.put_bytes(b"late", kind="c")
    fresh.refresh()
    assert fresh.get(late.id) is not None
    for st in (s, other, fresh):
        st.close()


def ids_hash(s: runstash.Store, art_id: str) -> str:
    a = s.get(art_id)
    assert a is not None
    return a.hash


def test_corrupt_blob_object_is_refused(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    s = open_store(seaweed, bucket, tmp_path / "w")
    a = s.put_bytes(os.urandom(100_000), kind="big")
    key = a.uri.removeprefix(f"s3://{bucket}/")
    seaweed.client().put_object(Bucket=bucket, Key=key, Body=os.urandom(100_000))
    r = open_store(seaweed, bucket, tmp_path / "r")
    with pytest.raises(runstash.CorruptError):
        r.read_bytes(a)
    assert not list((tmp_path / "r" / "blobs").rglob("*")) or not any(
        p.is_file() for p in (tmp_path / "r" / "blobs").rglob("*")
    ), "bad bytes are not cached"
    s.close()
    r.close()


def test_bad_settings(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(runstash.InvalidArgumentError):
        runstash.Store("s3://", s3=options(seaweed, tmp_path / "x"))
    with pytest.raises(runstash.InvalidArgumentError):
        runstash.Store(tmp_path / "local", s3=options(seaweed, tmp_path / "x"))
    with pytest.raises(runstash.StoreIOError):  # nothing listens there
        runstash.Store(
            "s3://b/p",
            s3=S3Options(
                endpoint="http://127.0.0.1:9",
                access_key_id="k",
                secret_access_key="s",
                region="us-east-1",
                cache_dir=tmp_path / "y",
                max_retries=0,
                request_timeout=5,
            ),
        )
    s = open_store(seaweed, bucket, tmp_path / "s")
    assert s.is_remote and s.root == f"s3://{bucket}/runs"
    with pytest.raises(runstash.IncompatibleStoreError):
        runstash.Store(f"s3://{bucket}/runs", hash="sha256", s3=options(seaweed, tmp_path / "z"))
    with pytest.raises(runstash.InvalidArgumentError, match="not allowed"):
        runstash.Store(f"s3://{bucket}/exp~1", s3=options(seaweed, tmp_path / "z"))
    s.close()


def test_credentials_from_environment(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    code = r"""
import sys, runstash
s = runstash.Store(sys.argv[1], s3=runstash.S3Options(cache_dir=sys.argv[2]))
print(s.put_bytes(b"from env", kind="env").id)
s.close()
"""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": seaweed.endpoint,
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "AWS_REGION": seaweed.region,
    }
    res = subprocess.run(
        [sys.executable, "-c", code, f"s3://{bucket}/env", str(tmp_path / "c")],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    art_id = res.stdout.decode().strip()
    r = runstash.Store(f"s3://{bucket}/env", s3=options(seaweed, tmp_path / "r"))
    a = r.get(art_id)
    assert a is not None and r.read_bytes(a) == b"from env"
    r.close()


def test_async_facade_on_an_s3_store(seaweed: Seaweed, bucket: str, tmp_path: Path) -> None:
    """The AetherGraph-compatible facade works unchanged on an S3 store (index calls go off
    the event loop there: they may talk to the bucket)."""

    store = open_store(seaweed, bucket, tmp_path / "c")
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(200_000))

    async def main() -> None:
        arts = runstash.ArtifactFacade(store, run_id="r1", graph_id="g", node_id="n")
        a = await arts.save(str(src), kind="model", metrics={"acc": 0.5})
        async with arts.writer(kind="model", planned_ext=".bin", metrics={"acc": 0.9}) as w:
            w.write(b"better model")
        best = await arts.best(kind="model", metric="acc", mode="max")
        assert best is not None and best.id == arts.last_artifact.id
        await arts.pin(a.id)
        assert [x.id for x in await arts.search(kind="model", metric="acc", mode="min")][0] == a.id
        assert await arts.load_artifact_bytes(a.uri) == src.read_bytes()

    asyncio.run(main())
    assert store.get(store.list(kind="model")[0].id).pinned
    store.close()


def test_buffered_operation_made_after_seeing_another_wins(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    """Each operation gets its own clock value when it is made, so a buffered segment opened
    before a refresh does not make a later delete lose to a pin it has seen."""
    a = open_store(seaweed, bucket, tmp_path / "a", durability="os", max_staleness=3600)
    b = open_store(seaweed, bucket, tmp_path / "b", max_staleness=3600)
    x = a.put_bytes(b"x", kind="m")  # opens a's buffered segment (its first clock value)
    a.flush()
    a.put_bytes(b"keeps the segment open", kind="m")
    b.refresh()
    b.pin(x.id)
    a.refresh()
    a.delete(x.id)
    assert a.get(x.id) is None
    a.flush()
    for s in (a, b, open_store(seaweed, bucket, tmp_path / "c")):
        s.refresh()
        assert s.get(x.id) is None
    a.close()
    b.close()


def test_buffered_writes_survive_a_failed_upload(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    """An upload of buffered writes that fails is kept and retried by the next flush: the
    acknowledged writes are not dropped."""
    w = open_store(
        seaweed, bucket, tmp_path / "w", durability="os", max_retries=0, request_timeout=2
    )
    ids = [w.put_bytes(b"buffered %d" % i, kind="b").id for i in range(3)]
    seaweed.kill_volume()
    try:
        with pytest.raises(runstash.StoreIOError):
            w.flush()
    finally:
        seaweed.start_volume()
    w.flush()
    w.close()
    r = open_store(seaweed, bucket, tmp_path / "r")
    assert {a.id for a in r.list(kind="b")} == set(ids)
    assert [r.read_bytes(r.get(i)) for i in ids] == [b"buffered %d" % i for i in range(3)]
    r.close()
