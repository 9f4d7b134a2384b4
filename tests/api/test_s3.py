"""S3 through ``/aws`` with real boto3 clients against the real server (pytest-django's
``live_server``): round trips, listings, multipart (the transfer manager's too), checksums as
recent botocore sends them, every refused input with its AWS error code and nothing stored,
and the owner rule on buckets. Attacks on the store's files are in ``tests/test_s3_store.py``."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
import zlib
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from jobs.awsapi import s3_store
from tests.api.sagemaker_support import no_proxy  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True)]

REGION = "us-east-1"
CONFIG = Config(
    retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120, s3={"addressing_style": "path"}
)
MiB = 1024 * 1024


@pytest.fixture
def store_root(settings, tmp_path: Path) -> Path:
    """Each test its own store (the server runs in this process: it sees the setting)."""
    settings.ANYJOB_S3_ROOT = tmp_path / "s3"
    return settings.ANYJOB_S3_ROOT


@pytest.fixture
def keys(live_server, no_proxy, store_root):  # noqa: F811 - fixture
    """``keys(user)`` → (access key id, secret) of a new key of ``user``."""
    from jobs.awsapi.models import AccessKey

    def make(user: Any) -> tuple[str, str]:
        key, secret = AccessKey.create_for(user, "s3 tests")
        return key.access_key_id, secret

    return make


@pytest.fixture
def s3_for(live_server, keys):
    def make(user: Any, region: str = REGION, **config: Any) -> Any:
        key_id, secret = keys(user)
        return boto3.client(
            "s3",
            endpoint_url=f"{live_server.url}/aws",
            region_name=region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=CONFIG.merge(Config(**config)) if config else CONFIG,
        )

    return make


@pytest.fixture
def s3(s3_for, alice):
    return s3_for(alice)


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def bucket_name() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


def nothing_stored(root: Path, bucket: str) -> bool:
    """No object row for ``bucket`` and no blob or temporary file left anywhere."""
    store = s3_store.Store(root)
    listed = store.list(bucket).objects
    blobs = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    tmp = list((root / "tmp").iterdir())
    return not listed and not blobs and not tmp


def test_put_get_head_delete_round_trip(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(100_000)
    put = s3.put_object(
        Bucket=bucket,
        Key="dir/data.bin",
        Body=body,
        ContentType="application/x-test",
        Metadata={"owner": "Alice"},
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/data.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"owner": "Alice"}
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=bucket, Key="dir/data.bin")
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == len(body)
    s3.delete_object(Bucket=bucket, Key="dir/data.bin")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/data.bin")
    assert code_of(missing) == "NoSuchKey"
    with pytest.raises(ClientError) as head_missing:
        s3.head_object(Bucket=bucket, Key="dir/data.bin")
    assert head_missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
