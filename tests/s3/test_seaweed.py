"""The SeaweedFS harness itself, driven with plain boto3: the cluster takes signed reads and
writes, multipart uploads, and survives its volume server being killed and restarted.

What a dead volume server looks like from boto3 (SeaweedFS 4.48, measured here):

- metadata still answers (HEAD, LIST: the filer has it), but GET of stored bytes fails at once
  with HTTP 500 InternalError;
- a PUT hangs: the gateway keeps asking the master for a writable volume for ~30 s, then answers
  HTTP 500 InternalError. A client read timeout shorter than that surfaces it sooner, as
  ReadTimeoutError (or ConnectionClosedError while the body is still being sent);
- the gateway does not drop such a PUT when the client gives up: once the volume server is
  back within those ~30 s, the write lands after all.
"""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from tests.s3.seaweed import Seaweed

MIB = 1 << 20

boto3 = pytest.importorskip("boto3")
botocore_exceptions = pytest.importorskip("botocore.exceptions")


def test_put_get_list_head_round_trip(seaweed: Seaweed, bucket: str) -> None:
    s3 = seaweed.client()
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="a/b/one.bin", Body=data)
    s3.put_object(Bucket=bucket, Key="a/two.txt", Body=b"two")
    assert s3.get_object(Bucket=bucket, Key="a/b/one.bin")["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="a/b/one.bin")["ContentLength"] == len(data)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["a/b/one.bin", "a/two.txt"]
    with pytest.raises(botocore_exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="missing")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # the identities file is enforced: unknown keys are refused
    anon = boto3.client("s3", **{**seaweed.client_kwargs(), "aws_access_key_id": "nobody"})
    with pytest.raises(botocore_exceptions.ClientError) as e:
        anon.list_buckets()
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_multipart_upload_12_mib(seaweed: Seaweed, bucket: str) -> None:
    from boto3.s3.transfer import TransferConfig

    s3 = seaweed.client()
    data = os.urandom(12 * MIB)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    got = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_killed_volume_server_fails_writes_then_recovers(seaweed: Seaweed, bucket: str) -> None:
    s3 = seaweed.client()
    before = os.urandom(MIB)
    s3.put_object(Bucket=bucket, Key="before", Body=before)
    # One attempt, short timeouts: the gateway itself would hang ~30 s before its HTTP 500.
    impatient = seaweed.client(retries=1, timeout=3.0)
    payload = os.urandom(MIB)
    try:
        seaweed.kill_volume()
        assert not seaweed.volume_running

        t0 = time.monotonic()
        with pytest.raises(
            (botocore_exceptions.ReadTimeoutError, botocore_exceptions.ClientError)
        ) as failed:
            impatient.put_object(Bucket=bucket, Key="during", Body=payload)
        took = time.monotonic() - t0
        print(f"PUT with the volume server dead failed after {took:.2f} s: {failed.value!r}")
        assert took < 10, took

        # metadata lives in the filer; bytes do not
        assert s3.head_object(Bucket=bucket, Key="before")["ContentLength"] == MIB
        with pytest.raises(botocore_exceptions.ClientError) as e:
            impatient.get_object(Bucket=bucket, Key="before")["Body"].read()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    finally:
        t0 = time.monotonic()
        seaweed.start_volume()
        print(f"volume server back in {time.monotonic() - t0:.2f} s")

    assert seaweed.volume_running
    s3.put_object(Bucket=bucket, Key="after", Body=b"after")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"after"
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == before

    # The PUT the client gave up on was still pending in the gateway: it lands now.
    deadline = time.monotonic() + 30
    while True:
        try:
            body = s3.get_object(Bucket=bucket, Key="during")["Body"].read()
            break
        except botocore_exceptions.ClientError:
            assert time.monotonic() < deadline, "the abandoned PUT never landed"
            time.sleep(0.2)
    assert body == payload
