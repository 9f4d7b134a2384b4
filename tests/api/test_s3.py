"""S3 through ``/aws`` with real boto3 clients against the real server (pytest-django's
``live_server``): round trips, listings, multipart (the transfer manager's too), checksums as
recent botocore sends them, every refused input with its AWS error code and nothing stored,
and the owner rule on buckets. Attacks on the store's files are in ``tests/test_s3_store.py``."""

from __future__ import annotations

import base64
import hashlib
import os
import time
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
from tests.api.sagemaker_support import client_for_fixture, image_env, no_proxy  # noqa: F401 - fixtures

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


# --- buckets ------------------------------------------------------------------------------------


def test_buckets_create_list_head_locate_delete(s3, s3_for, alice, bob, charlie) -> None:
    bucket = bucket_name()
    created = s3.create_bucket(Bucket=bucket)
    assert created["Location"] == f"/{bucket}"
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    head = s3.head_bucket(Bucket=bucket)
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None
    time.sleep(1.05)  # the same request in the same second would be the same signature: a replay
    with pytest.raises(ClientError) as again:
        s3.create_bucket(Bucket=bucket)
    assert code_of(again) == "BucketAlreadyOwnedByYou"
    bobs = s3_for(bob)
    with pytest.raises(ClientError) as taken:
        bobs.create_bucket(Bucket=bucket)
    assert code_of(taken) == "BucketAlreadyExists"
    # A teammate reads and writes the team's bucket, but only its creator (or staff) deletes it.
    bobs.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket=bucket)
    assert code_of(not_empty) == "BucketNotEmpty"
    bobs.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as denied:
        bobs.delete_bucket(Bucket=bucket)
    assert code_of(denied) == "AccessDenied"
    assert s3.head_bucket(Bucket=bucket)  # still there
    s3_for(charlie).delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket=bucket)
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_location(Bucket=bucket)
    assert code_of(missing) == "NoSuchBucket"
    with pytest.raises(ClientError) as no_bucket:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert code_of(no_bucket) == "NoSuchBucket"


def test_location_constraints_as_aws_has_them(s3, s3_for, alice) -> None:
    eu = s3_for(alice, region="eu-west-1")
    bucket = bucket_name()
    with pytest.raises(ClientError) as unspecified:
        eu.create_bucket(Bucket=bucket)
    assert code_of(unspecified) == "IllegalLocationConstraintException"
    eu.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert eu.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    with pytest.raises(ClientError) as explicit_us:
        s3.create_bucket(Bucket=bucket_name(), CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    assert code_of(explicit_us) == "InvalidLocationConstraint"
    with pytest.raises(ClientError) as other:
        s3.create_bucket(Bucket=bucket_name(), CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code_of(other) == "IllegalLocationConstraintException"


@pytest.mark.parametrize(
    "name",
    ["ab", "x" * 64, "UpperCase", "under_score", "192.168.1.10", "xn--punycode", "a..b", "-leading",
     "trailing-", "sthree-bucket", "name-s3alias"],
)  # fmt: skip
def test_bucket_names_aws_refuses(s3, store_root, name) -> None:
    with pytest.raises(ClientError) as refused:
        s3.create_bucket(Bucket=name)
    assert code_of(refused) == "InvalidBucketName"
    assert s3_store.Store(store_root).bucket(name) is None


# --- objects ------------------------------------------------------------------------------------


def test_ranges(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = bytes(range(256)) * 4
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    for header, first, last in (("bytes=0-9", 0, 9), ("bytes=1000-", 1000, 1023), ("bytes=-5", 1019, 1023),
                                ("bytes=1020-5000", 1020, 1023)):  # fmt: skip
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {first}-{last}/1024"
        assert got["Body"].read() == body[first : last + 1]
        assert got["ContentLength"] == last - first + 1
    with pytest.raises(ClientError) as beyond:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=1024-")
    assert code_of(beyond) == "InvalidRange"
    assert beyond.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    head = s3.head_object(Bucket=bucket, Key="r", Range="bytes=0-99")
    assert head["ContentLength"] == 100


def test_conditional_get(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"cached")["ETag"]
    with pytest.raises(ClientError) as not_modified:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert not_modified.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert code_of(failed) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"cached"
    later = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    with pytest.raises(ClientError) as not_since:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=later)
    assert not_since.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_keys_are_rows_not_paths_folders_and_case(s3) -> None:
    """``a``, ``a/`` and ``a/b`` are three objects (a file and a folder of the same name, which a
    filesystem cannot hold); ``Data`` and ``data`` are two."""
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    for key, body in (
        ("a", b"file"),
        ("a/", b""),
        ("a/b", b"inside"),
        ("Data", b"upper"),
        ("data", b"lower"),
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in (
        ("a", b"file"),
        ("a/", b""),
        ("a/b", b"inside"),
        ("Data", b"upper"),
        ("data", b"lower"),
    ):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == ["Data", "a", "a/", "a/b", "data"]


def test_listing_prefix_delimiter_pagination_and_url_encoding(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    # (Non-ASCII keys go through gunicorn: test_through_gunicorn_unicode_keys_and_a_transfer.)
    keys = sorted(
        ["top.txt", "train/a.csv", "train/b.csv", "train/sub/c.csv", "train/sub/d.csv", "train2/x", "val/y",
         "odd key+plus&amp;<tag>", "zz/~tilde", "tab\tkey"]
    )  # fmt: skip
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys, key=lambda k: k.encode())
    assert everything["KeyCount"] == len(keys) and not everything["IsTruncated"]
    assert everything["Contents"][0]["Size"] == len(everything["Contents"][0]["Key"].encode())

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["train/", "train2/", "val/", "zz/"]
    assert [o["Key"] for o in top["Contents"]] == ["odd key+plus&amp;<tag>", "tab\tkey", "top.txt"]
    train = s3.list_objects_v2(Bucket=bucket, Prefix="train/", Delimiter="/")
    assert [o["Key"] for o in train["Contents"]] == ["train/a.csv", "train/b.csv"]
    assert [p["Prefix"] for p in train["CommonPrefixes"]] == ["train/sub/"]

    # Pages of 2 (prefixes count as keys): the paginator follows the tokens to the same answer.
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    assert len(pages) == 4
    assert all(p["KeyCount"] <= 2 for p in pages)
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == [o["Key"] for o in top["Contents"]]
    assert [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])] == [
        c["Prefix"] for c in top["CommonPrefixes"]
    ]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="train/b.csv", MaxKeys=2)
    assert [o["Key"] for o in after["Contents"]] == ["train/sub/c.csv", "train/sub/d.csv"]
    assert after["IsTruncated"]
    # ListObjects (v1) with markers, as older tools page.
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == [o["Key"] for o in everything["Contents"]]
    v1_folders = list(
        s3.get_paginator("list_objects").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    assert [c["Prefix"] for p in v1_folders for c in p.get("CommonPrefixes", [])] == [
        c["Prefix"] for c in top["CommonPrefixes"]
    ]
    assert all(p.get("NextMarker") for p in v1_folders[:-1])
    with pytest.raises(ClientError) as bad_token:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not-a-token!")
    assert code_of(bad_token) == "InvalidArgument"
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)["MaxKeys"] == 1000


def test_copy_object_metadata_directives(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/plain", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    dst = s3.get_object(Bucket=bucket, Key="dst")
    assert (dst["Body"].read(), dst["ContentType"], dst["Metadata"]) == (b"payload", "text/plain", {"a": "1"})
    s3.copy_object(
        Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
        ContentType="application/json", Metadata={"b": "2"},
    )  # fmt: skip
    replaced = s3.head_object(Bucket=bucket, Key="dst")
    assert (replaced["ContentType"], replaced["Metadata"]) == ("application/json", {"b": "2"})
    # The copy is its own object: deleting the source leaves it.
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"payload"
    with pytest.raises(ClientError) as to_itself:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "dst"})
    assert code_of(to_itself) == "InvalidRequest"
    with pytest.raises(ClientError) as no_source:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "src"})
    assert code_of(no_source) == "NoSuchKey"


def sent_headers(client: Any) -> list[dict[str, str]]:
    """The headers of every request ``client`` sends from now on (botocore's own event)."""
    seen: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        seen.append({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    client.meta.events.register("before-send.s3.*", record)
    return seen


def test_delete_objects_loud_and_quiet(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    for key in ("a", "b", "c", "d"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    seen = sent_headers(s3)
    loud = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in loud["Deleted"]) == ["a", "b", "missing"]
    # Recent botocore sends x-amz-checksum-crc32, not Content-MD5, with the XML body: checked.
    assert "x-amz-checksum-crc32" in {k.lower() for k in seen[0]} and "Content-MD5" not in seen[0]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d"]


def test_unknown_operations_are_not_implemented(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    for call in (lambda: s3.get_bucket_acl(Bucket=bucket), lambda: s3.get_bucket_versioning(Bucket=bucket),
                 lambda: s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": []})):  # fmt: skip
        with pytest.raises(ClientError) as refused:
            call()
        assert code_of(refused) == "NotImplemented"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_presigned_get(s3, s3_for, alice) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="shared/report.txt", Body=b"hello")
    # botocore presigns S3 with SigV2 unless told: anyjob verifies SigV4 (what s3v4 asks for).
    v4 = s3_for(alice, signature_version="s3v4")
    url = v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/report.txt"}, ExpiresIn=60
    )
    answer = requests.get(url, timeout=10, proxies={"http": None, "https": None})
    assert answer.status_code == 200 and answer.content == b"hello", answer.text
    tampered = requests.get(
        url.replace("report.txt", "other.txt"), timeout=10, proxies={"http": None, "https": None}
    )
    assert tampered.status_code == 403


# --- multipart ----------------------------------------------------------------------------------


def test_multipart_by_hand_with_crc32_parts(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    first, last = os.urandom(5 * MiB), os.urandom(1000)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big/file", ContentType="application/x-big",
                                        Metadata={"m": "v"}, ChecksumAlgorithm="CRC32")  # fmt: skip
    uid = upload["UploadId"]
    p1 = s3.upload_part(
        Bucket=bucket, Key="big/file", UploadId=uid, PartNumber=1, Body=first, ChecksumAlgorithm="CRC32"
    )
    p2 = s3.upload_part(
        Bucket=bucket, Key="big/file", UploadId=uid, PartNumber=2, Body=last, ChecksumAlgorithm="CRC32"
    )
    assert p1["ChecksumCRC32"] == base64.b64encode(zlib.crc32(first).to_bytes(4, "big")).decode()
    listed = s3.list_parts(Bucket=bucket, Key="big/file", UploadId=uid)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed["Parts"]] == [
        (1, len(first), p1["ETag"]), (2, len(last), p2["ETag"])
    ]  # fmt: skip
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big/file", UploadId=uid,
        MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": p1["ETag"], "ChecksumCRC32": p1["ChecksumCRC32"]},
            {"PartNumber": 2, "ETag": p2["ETag"], "ChecksumCRC32": p2["ChecksumCRC32"]},
        ]},
    )  # fmt: skip
    md5s = hashlib.md5(first).digest() + hashlib.md5(last).digest()
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    assert done["ChecksumCRC32"].endswith("-2")
    got = s3.get_object(Bucket=bucket, Key="big/file", ChecksumMode="ENABLED")
    assert got["Body"].read() == first + last
    assert (got["ContentType"], got["Metadata"], got["ETag"]) == (
        "application/x-big",
        {"m": "v"},
        done["ETag"],
    )
    assert got["PartsCount"] == 2 if "PartsCount" in got else True
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_multipart_refusals_and_abort_leave_nothing(s3, store_root) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    small = [
        s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=n, Body=b"x" * 100)["ETag"]
        for n in (1, 2)
    ]

    def complete(parts: list[dict[str, Any]]) -> str:
        with pytest.raises(ClientError) as refused:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": parts}
            )
        return code_of(refused)

    assert (
        complete([{"PartNumber": 1, "ETag": small[0]}, {"PartNumber": 2, "ETag": small[1]}])
        == "EntityTooSmall"
    )
    assert (
        complete([{"PartNumber": 2, "ETag": small[1]}, {"PartNumber": 1, "ETag": small[0]}])
        == "InvalidPartOrder"
    )
    assert complete([{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]) == "InvalidPart"
    assert complete([{"PartNumber": 3, "ETag": small[0]}]) == "InvalidPart"
    with pytest.raises(ClientError) as part_zero:
        s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code_of(part_zero) == "InvalidArgument"
    with pytest.raises(ClientError) as other_key:
        s3.list_parts(Bucket=bucket, Key="other", UploadId=uid)
    assert code_of(other_key) == "NoSuchUpload"
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    with pytest.raises(ClientError) as gone:
        s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=3, Body=b"x")
    assert code_of(gone) == "NoSuchUpload"
    time.sleep(1.05)  # not the same signature as the first abort (that would be a replay)
    with pytest.raises(ClientError) as aborted:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    assert code_of(aborted) == "NoSuchUpload"
    assert nothing_stored(store_root, bucket)


def test_upload_file_of_20_mb_through_the_transfer_manager(s3, tmp_path, store_root) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    source = tmp_path / "twenty.bin"
    source.write_bytes(os.urandom(20 * MiB))
    s3.upload_file(str(source), bucket, "data/twenty.bin")  # 8 MiB parts: a multipart upload of 3
    head = s3.head_object(Bucket=bucket, Key="data/twenty.bin")
    assert head["ContentLength"] == 20 * MiB and head["ETag"].endswith('-3"')
    back = tmp_path / "back.bin"
    s3.download_file(bucket, "data/twenty.bin", str(back))  # ranged GETs in threads
    assert back.read_bytes() == source.read_bytes()
    # Parts are gone once joined: one blob, the object's.
    assert len([p for p in (store_root / "blobs").rglob("*") if p.is_file()]) == 1


def test_stale_multipart_uploads_are_swept(s3, settings, store_root) -> None:
    from jobs.awsapi import s3_tasks

    assert settings.CELERY_BEAT_SCHEDULE["s3-sweep-uploads"]["task"] == "awsapi.s3_sweep_uploads"
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    old = s3.create_multipart_upload(Bucket=bucket, Key="old")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="old", UploadId=old, PartNumber=1, Body=b"abandoned")
    settings.ANYJOB_S3_MULTIPART_MAX_AGE_HOURS = 0.5 / 3600
    time.sleep(0.6)
    young = s3.create_multipart_upload(Bucket=bucket, Key="young")["UploadId"]
    assert s3_tasks.s3_sweep_uploads() == 1
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [young]
    with pytest.raises(ClientError) as swept:
        s3.list_parts(Bucket=bucket, Key="old", UploadId=old)
    assert code_of(swept) == "NoSuchUpload"
    assert not [p for p in (store_root / "blobs").rglob("*") if p.is_file()]


# --- checksums ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256", "SHA1"])
def test_checksums_botocore_computes_are_checked_and_echoed(s3, algorithm) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(3000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm=algorithm)
    digest = {"CRC32": zlib.crc32(body).to_bytes(4, "big"), "SHA256": hashlib.sha256(body).digest(),
              "SHA1": hashlib.sha1(body).digest()}[algorithm]  # fmt: skip
    assert put[f"Checksum{algorithm}"] == base64.b64encode(digest).decode()
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == put[f"Checksum{algorithm}"]
    assert got["Body"].read() == body  # botocore checks the checksum as it reads


def test_a_plain_put_object_carries_crc32_as_recent_botocore_sends_it(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    seen = sent_headers(s3)
    body = os.urandom(50_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body)  # no checksum asked for
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert seen[0]["x-amz-checksum-crc32"] == crc and put["ChecksumCRC32"] == crc
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert listed["ChecksumAlgorithm"] == ["CRC32"]


def test_checksums_without_a_botocore_implementation(s3) -> None:
    """CRC32C and CRC64NVME need awscrt in botocore; a client that has it sends the value."""
    from jobs.awsapi import s3_digest

    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = b"123456789"
    crc32c = base64.b64encode((0xE3069283).to_bytes(4, "big")).decode()  # RFC 3720's check value
    s3.put_object(Bucket=bucket, Key="c", Body=body, ChecksumCRC32C=crc32c)
    crc64 = s3_digest.hasher("crc64nvme")
    crc64.update(body)
    assert crc64.digest() == (0xAE8B14860A799888).to_bytes(8, "big")  # the CRC-64/NVME check value
    s3.put_object(
        Bucket=bucket, Key="n", Body=body, ChecksumCRC64NVME=base64.b64encode(crc64.digest()).decode()
    )
    assert s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")["ChecksumCRC32C"] == crc32c
    with pytest.raises(ClientError) as wrong:
        s3.put_object(
            Bucket=bucket, Key="w", Body=body, ChecksumCRC32C=base64.b64encode(b"\0\0\0\0").decode()
        )
    assert code_of(wrong) == "BadDigest"


def test_bad_digests_store_nothing(s3, store_root) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = b"the body"
    wrong_crc = base64.b64encode(zlib.crc32(b"another").to_bytes(4, "big")).decode()
    wrong_md5 = base64.b64encode(hashlib.md5(b"another").digest()).decode()
    cases = [
        ({"ChecksumCRC32": wrong_crc}, "BadDigest"),
        ({"ChecksumSHA256": base64.b64encode(b"short").decode()}, "InvalidRequest"),
        ({"ContentMD5": wrong_md5}, "BadDigest"),
        ({"ContentMD5": "not base64!"}, "InvalidDigest"),
    ]
    for extra, code in cases:
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=bucket, Key="k", Body=body, **extra)
        assert code_of(refused) == code, extra
    assert nothing_stored(store_root, bucket)


# --- refused keys -------------------------------------------------------------------------------


def test_refused_keys_store_nothing(s3, store_root) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    refused_keys = [("k" * 1025, "KeyTooLongError"), ("a/../b", "InvalidArgument"),
                    ("../escape", "InvalidArgument"), ("./x", "InvalidArgument"),
                    ("nul\x00byte", "InvalidArgument")]  # fmt: skip
    for key, code in refused_keys:
        for call, kwargs in (
            (s3.put_object, {"Body": b"x"}),
            (s3.create_multipart_upload, {}),
            (s3.copy_object, {"CopySource": {"Bucket": bucket, "Key": "none"}}),
        ):
            with pytest.raises(ClientError) as refused:
                call(Bucket=bucket, Key=key, **kwargs)
            assert code_of(refused) == code, key
    assert nothing_stored(store_root, bucket)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"longest")  # the limit itself is fine
    assert s3.get_object(Bucket=bucket, Key="k" * 1024)["Body"].read() == b"longest"


# --- requests botocore would not send -----------------------------------------------------------

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def sign(
    method: str, url: str, key: tuple[str, str], headers: dict[str, str], payload_hash: str
) -> dict[str, str]:
    """``headers`` plus SigV4's, signed by botocore's own S3 signer with ``payload_hash`` as the
    payload line (what a client that streams, or lies, would put there)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    class Fixed(S3SigV4Auth):
        def payload(self, request: Any) -> str:
            return payload_hash

    request = AWSRequest(method=method, url=url, headers=headers)
    Fixed(Credentials(*key), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def chunk_signer(headers: dict[str, str], secret: str):
    """The chunk signatures a signing client computes: each over the previous one."""
    import hmac

    amz_date = headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    k = ("AWS4" + secret).encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    previous = [headers["Authorization"].rsplit("Signature=", 1)[1]]

    def sign_chunk(data: bytes) -> str:
        text = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous[0], EMPTY_SHA256,
                          hashlib.sha256(data).hexdigest()])  # fmt: skip
        previous[0] = hmac.new(k, text.encode(), hashlib.sha256).hexdigest()
        return previous[0]

    return sign_chunk


def chunked(data: bytes, size: int, *, signer=None, trailer: str = "") -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)] + [b""]
    out = b""
    for piece in pieces:
        head = f"{len(piece):x}" + (f";chunk-signature={signer(piece)}" if signer else "")
        out += head.encode() + b"\r\n" + piece + (b"\r\n" if piece else b"")
    return out + trailer.encode() + b"\r\n"


def send(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> requests.Response:
    return requests.request(
        method, url, headers=headers, data=body, timeout=30, proxies={"http": None, "https": None}
    )


def error_code(response: requests.Response) -> str:
    import xml.etree.ElementTree as ET

    return ET.fromstring(response.content).findtext("Code") or ""


@pytest.fixture
def raw(live_server, keys, s3_for, alice):
    """(bucket URL, key, boto3 client) for crafting requests by hand."""
    key = keys(alice)
    client = s3_for(alice)
    bucket = bucket_name()
    client.create_bucket(Bucket=bucket)
    return f"{live_server.url}/aws/{bucket}", key, client, bucket


def test_aws_chunked_with_a_trailing_checksum(raw, store_root) -> None:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER, as botocore sends uploads over HTTPS."""
    base, key, client, bucket = raw
    data = os.urandom(200_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32", "Content-Type": "text/csv"}  # fmt: skip
    url = f"{base}/streamed"

    def put(attempt: str, body: bytes) -> requests.Response:
        return send("PUT", url, sign("PUT", url, key, {**headers, "x-amz-meta-try": attempt}, TRAILER), body)

    good = put("1", chunked(data, 65536, trailer=f"x-amz-checksum-crc32:{crc}\r\n"))
    assert good.status_code == 200, good.text
    assert good.headers["x-amz-checksum-crc32"] == crc
    got = client.get_object(Bucket=bucket, Key="streamed", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ContentType"] == "text/csv" and got["ChecksumCRC32"] == crc
    assert got["Metadata"] == {"try": "1"}
    assert "ContentEncoding" not in got  # aws-chunked is the transfer's, not the object's
    client.delete_object(Bucket=bucket, Key="streamed")
    wrong = base64.b64encode(zlib.crc32(b"x").to_bytes(4, "big")).decode()
    bad = put("2", chunked(data, 65536, trailer=f"x-amz-checksum-crc32:{wrong}\r\n"))
    assert (bad.status_code, error_code(bad)) == (400, "BadDigest")
    short = put("3", chunked(data[:-1], 65536, trailer=f"x-amz-checksum-crc32:{crc}\r\n"))
    assert (short.status_code, error_code(short)) == (400, "IncompleteBody")
    assert nothing_stored(store_root, bucket)


def test_signed_chunks_are_verified(raw, store_root) -> None:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD: every chunk signed; a chunk changed on the way fails."""
    base, key, client, bucket = raw
    data = os.urandom(150_000)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    signed = sign("PUT", f"{base}/signed", key, headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    good = send("PUT", f"{base}/signed", signed, chunked(data, 65536, signer=chunk_signer(signed, key[1])))
    assert good.status_code == 200, good.text
    assert client.get_object(Bucket=bucket, Key="signed")["Body"].read() == data
    client.delete_object(Bucket=bucket, Key="signed")
    time.sleep(1.05)  # a new signature, not a replay of the one above
    signed = sign("PUT", f"{base}/signed", key, headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    body = bytearray(chunked(data, 65536, signer=chunk_signer(signed, key[1])))
    body[-200] ^= 1  # a byte of the last data chunk, after it was signed
    forged = send("PUT", f"{base}/signed", signed, bytes(body))
    assert (forged.status_code, error_code(forged)) == (403, "SignatureDoesNotMatch")
    unsigned = send("PUT", f"{base}/signed2", sign("PUT", f"{base}/signed2", key, headers,
                    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), chunked(data, 65536))  # fmt: skip
    assert (unsigned.status_code, error_code(unsigned)) == (403, "SignatureDoesNotMatch")
    assert nothing_stored(store_root, bucket)


def test_a_body_that_is_not_the_signed_hash_is_refused(raw, store_root) -> None:
    base, key, _, bucket = raw
    headers = sign("PUT", f"{base}/k", key, {}, hashlib.sha256(b"what was signed").hexdigest())
    answer = send("PUT", f"{base}/k", headers, b"what was sent")
    assert (answer.status_code, error_code(answer)) == (400, "XAmzContentSHA256Mismatch")
    assert nothing_stored(store_root, bucket)


def test_a_single_put_over_5_gb_is_refused_before_its_body(raw, store_root) -> None:
    import http.client
    from urllib.parse import urlsplit

    base, key, _, bucket = raw
    url = urlsplit(f"{base}/huge")
    headers = sign("PUT", f"{base}/huge", key, {}, "UNSIGNED-PAYLOAD")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.putrequest("PUT", url.path, skip_host=True, skip_accept_encoding=True)
    for name, value in {**headers, "Host": url.netloc, "Content-Length": str(5 * 1024**3 + 1)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(b"only the start of it")
    started = time.monotonic()
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    assert answer.status == 400 and b"<Code>EntityTooLarge</Code>" in body
    assert b"<MaxSizeAllowed>5368709120</MaxSizeAllowed>" in body
    assert time.monotonic() - started < 5
    assert nothing_stored(store_root, bucket)


def test_delete_objects_needs_a_digest_and_well_formed_xml(raw) -> None:
    base, key, client, bucket = raw
    client.put_object(Bucket=bucket, Key="keep", Body=b"x")
    xml = b"<Delete><Object><Key>keep</Key></Object></Delete>"
    plain = send(
        "POST",
        f"{base}?delete",
        sign("POST", f"{base}?delete", key, {}, hashlib.sha256(xml).hexdigest()),
        xml,
    )
    assert (plain.status_code, error_code(plain)) == (400, "InvalidRequest")
    entity = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
              b"<Delete><Object><Key>&x;</Key></Object></Delete>")  # fmt: skip
    for body in (entity, b"<Delete><Object><Key>keep</Key>", b"<Other/>"):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        headers = sign("POST", f"{base}?delete", key, {"Content-MD5": md5}, hashlib.sha256(body).hexdigest())
        answer = send("POST", f"{base}?delete", headers, body)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), body
    wrong = sign("POST", f"{base}?delete", key, {"Content-MD5": base64.b64encode(b"0" * 16).decode()},
                 hashlib.sha256(xml).hexdigest())  # fmt: skip
    assert error_code(send("POST", f"{base}?delete", wrong, xml)) == "BadDigest"
    assert client.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"x"


def test_head_errors_have_no_body(raw) -> None:
    base, key, _, _ = raw
    answer = requests.head(f"{base}/missing", headers=sign("HEAD", f"{base}/missing", key, {}, EMPTY_SHA256),
                           timeout=10, proxies={"http": None, "https": None})  # fmt: skip
    assert answer.status_code == 404 and answer.content == b""
    assert answer.headers["x-amz-request-id"]


# --- the local backend reads the same objects ---------------------------------------------------

CHANNEL_TRAIN = """\
import json, os
channel = os.environ["SM_CHANNEL_TRAIN"]
seen = {}
for folder, _, names in os.walk(channel):
    for n in names:
        path = os.path.join(folder, n)
        seen[os.path.relpath(path, channel)] = open(path).read()
open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w").write(json.dumps(seen, sort_keys=True))
print("staged", len(seen), flush=True)
"""


@pytest.mark.slow
def test_a_local_job_stages_channels_uploaded_through_the_api_and_writes_back(
    client_for, s3_for, alice, settings, monkeypatch, tmp_path
) -> None:
    """Data put with boto3 through ``/aws`` is a local job's ``s3://`` channel, and the job's
    ``model.tar.gz`` lands in the same store, read back with boto3 — in the default config (no
    role mapped, no S3 endpoint, ANYJOB_S3 auto: the embedded store)."""
    import io
    import json
    import tarfile

    from jobs import storage
    from tests.api.sagemaker_support import FAST_WAITER, training_request, upload_code

    for name in ("ANYJOB_S3", "ANYJOB_S3_ROOT", "ANYJOB_LOCAL_ROLES", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)  # the job's process gets the settings' values
    settings.ANYJOB_S3, settings.ANYJOB_LOCAL_ROLES = "auto", ""
    assert storage.s3_embedded()
    s3 = s3_for(alice)
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="train/a.csv", Body=b"1,2\n")
    s3.put_object(Bucket=bucket, Key="train/sub/b.csv", Body=b"3,4\n")
    s3.put_object(Bucket=bucket, Key="training-not/c.csv", Body=b"not mine\n")
    sm = client_for(alice)
    job = f"s3-channel-{uuid.uuid4().hex[:6]}"
    request = training_request(job, upload_code(job, {"train.py": CHANNEL_TRAIN}))
    request["InputDataConfig"] = [
        {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
         "S3Uri": f"s3://{bucket}/train/", "S3DataDistributionType": "FullyReplicated"}}}
    ]  # fmt: skip
    request["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/output"}
    request.pop("DebugHookConfig"), request.pop("ProfilerConfig")
    sm.create_training_job(**request)
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=job, WaiterConfig=FAST_WAITER)
    described = sm.describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert (
        described["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/output/{job}/output/model.tar.gz"
    )
    archive = s3.get_object(Bucket=bucket, Key=f"output/{job}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        seen = json.loads(tar.extractfile("seen.json").read())
    assert seen == {"a.csv": "1,2\n", "sub/b.csv": "3,4\n"}
    assert storage.exists(f"s3://{bucket}/output/{job}/output/model.tar.gz")


# --- through gunicorn ---------------------------------------------------------------------------


@pytest.mark.slow
def test_through_gunicorn_unicode_keys_and_a_transfer(web_server, tmp_path, no_proxy) -> None:  # noqa: F811
    """The real web server (``webapp.run web``): keys beyond ASCII as the client encoded them
    (gunicorn keeps the raw path), and the transfer manager's parallel multipart upload with
    ``Expect: 100-continue``."""
    done = web_server.manage("create_access_key", "admin")
    assert done.returncode == 0, done.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.strip().splitlines())
    s3 = boto3.client(
        "s3",
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        region_name=exports["AWS_DEFAULT_REGION"],
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        config=CONFIG,
    )
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    keys = ["ünï/cödé.csv", "日本/データ", "emoji/🙂", "ünï/Cödé.csv"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == sorted(
        ["ünï/", "日本/", "emoji/"], key=lambda k: k.encode()
    )
    with pytest.raises(ClientError) as too_long:
        s3.put_object(Bucket=bucket, Key="é" * 513, Body=b"x")  # 513 characters, 1,026 bytes
    assert code_of(too_long) == "KeyTooLongError"
    source = tmp_path / "thirty.bin"
    source.write_bytes(os.urandom(30 * MiB))
    started = time.monotonic()
    s3.upload_file(str(source), bucket, "big/thirty.bin")
    took = time.monotonic() - started
    assert s3.head_object(Bucket=bucket, Key="big/thirty.bin")["ETag"].endswith('-4"')
    back = tmp_path / "back.bin"
    s3.download_file(bucket, "big/thirty.bin", str(back))
    assert back.read_bytes() == source.read_bytes()
    assert took < 20, f"30 MB took {took:.1f} s"  # no second lost per part waiting for 100-continue
    store = Path(web_server.env["ANYJOB_VAR_DIR"]) / "artifacts" / "s3"
    assert s3_store.Store(store).head(bucket, "日本/データ").size == len("日本/データ".encode())


def test_managed_copy_of_a_large_object_uses_upload_part_copy(s3) -> None:
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(17 * MiB)
    s3.put_object(Bucket=bucket, Key="big", Body=body, ContentType="application/x-big")
    s3.copy({"Bucket": bucket, "Key": "big"}, bucket, "big-copy")  # parts of 8 MiB: UploadPartCopy
    head = s3.head_object(Bucket=bucket, Key="big-copy")
    assert head["ETag"].endswith('-3"') and head["ContentType"] == "application/x-big"
    assert s3.get_object(Bucket=bucket, Key="big-copy")["Body"].read() == body
    uid = s3.create_multipart_upload(Bucket=bucket, Key="part")["UploadId"]
    source = {"Bucket": bucket, "Key": "big"}
    with pytest.raises(ClientError) as outside:
        s3.upload_part_copy(Bucket=bucket, Key="part", UploadId=uid, PartNumber=1, CopySource=source,
                            CopySourceRange=f"bytes=0-{len(body)}")  # fmt: skip
    assert code_of(outside) == "InvalidArgument"
    part = s3.upload_part_copy(Bucket=bucket, Key="part", UploadId=uid, PartNumber=1, CopySource=source,
                               CopySourceRange="bytes=10-19")  # fmt: skip
    assert part["CopyPartResult"]["ETag"] == f'"{hashlib.md5(body[10:20]).hexdigest()}"'
