"""An in-process stand-in for a boto3 S3 client, over the embedded store.

``jobs.storage`` reaches S3 through one client object; with the embedded S3
(``s3_store.mode() == "embedded"``) that object is this one, so the local backend stages and
uploads the very objects ``/aws`` serves, without HTTP, keys or a running web server. It has
the methods ``jobs.storage`` calls, with boto3's argument names, return shapes and errors
(``botocore.exceptions.ClientError`` carrying S3's code, message and status), so the storage
layer's error handling is the same for both.

anyjob's own processes act here, not a user: no signature, no owner rule (the owner rules
are the API's, ``jobs.awsapi.s3``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from botocore.exceptions import ClientError

from jobs.awsapi import s3_store
from jobs.awsapi.s3_store import Expected, ObjectMeta, S3Error


@contextlib.contextmanager
def _errors(operation: str) -> Iterator[None]:
    try:
        yield
    except S3Error as exc:
        error = {"Code": exc.code, "Message": exc.message, **exc.fields}
        response = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": exc.status}}
        raise ClientError(response, operation) from None  # type: ignore[arg-type]


def _meta(extra: dict[str, Any] | None) -> ObjectMeta:
    extra = extra or {}
    metadata = {str(k).lower(): str(v) for k, v in (extra.get("Metadata") or {}).items()}
    return ObjectMeta(content_type=extra.get("ContentType") or "binary/octet-stream", metadata=metadata)


class EmbeddedS3Client:
    """The subset of boto3's S3 client ``jobs.storage`` uses."""

    def __init__(self, store: s3_store.Store, region: str = "us-east-1") -> None:
        self._store = store
        self.meta = SimpleNamespace(region_name=region)

    # uploads ----------------------------------------------------------------------------------

    def upload_fileobj(
        self, Fileobj: IO[bytes], Bucket: str, Key: str, ExtraArgs: dict | None = None
    ) -> None:
        with _errors("PutObject"):
            self._store.put(
                Bucket, Key, Fileobj, Expected(), _meta(ExtraArgs), limit=s3_store.MAX_OBJECT_BYTES
            )

    def upload_file(self, Filename: str, Bucket: str, Key: str, ExtraArgs: dict | None = None) -> None:
        with open(Filename, "rb") as f:
            self.upload_fileobj(f, Bucket, Key, ExtraArgs)

    def put_object(
        self, Bucket: str, Key: str, Body: bytes | IO[bytes] = b"", **extra: Any
    ) -> dict[str, Any]:
        stream = io.BytesIO(Body) if isinstance(Body, bytes | bytearray) else Body
        with _errors("PutObject"):
            info = self._store.put(
                Bucket, Key, stream, Expected(), _meta(extra), limit=s3_store.MAX_OBJECT_BYTES
            )
        return {"ETag": f'"{info.etag}"'}

    def copy(self, CopySource: dict[str, str], Bucket: str, Key: str, ExtraArgs: dict | None = None) -> None:
        replace = (ExtraArgs or {}).get("MetadataDirective") == "REPLACE"
        with _errors("CopyObject"):
            source = self._store.head(CopySource["Bucket"], CopySource["Key"])
            if source.size > s3_store.MAX_PUT_BYTES:
                # Past a single copy's limit: through this process, as boto3's managed copy
                # would do in parts.
                meta = _meta(ExtraArgs) if replace else source.meta
                _, stream = self._store.open(CopySource["Bucket"], CopySource["Key"])
                with stream:
                    self._store.put(Bucket, Key, stream, Expected(), meta, limit=s3_store.MAX_OBJECT_BYTES)
                return
            self._store.copy(
                CopySource["Bucket"], CopySource["Key"], Bucket, Key, _meta(ExtraArgs) if replace else None
            )

    # reads ------------------------------------------------------------------------------------

    def _head(self, info: s3_store.ObjectInfo) -> dict[str, Any]:
        return {
            "ContentLength": info.size,
            "ETag": f'"{info.etag}"',
            "ContentType": info.meta.content_type,
            "Metadata": dict(info.meta.metadata),
            "LastModified": datetime.fromtimestamp(int(info.modified), UTC),
        }

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        with _errors("HeadObject"):
            return self._head(self._store.head(Bucket, Key))

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        with _errors("GetObject"):
            info, stream = self._store.open(Bucket, Key)
        return {**self._head(info), "Body": stream}

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:
        """As boto3's: written to a temporary name beside ``Filename``, then renamed."""
        target = Path(Filename)
        with _errors("GetObject"):
            _, stream = self._store.open(Bucket, Key)
        with stream:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(stream, out, s3_store.BLOCK)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        with _errors("DeleteObject"):
            self._store.delete(Bucket, Key)
        return {}

    def list_objects_v2(
        self,
        Bucket: str,
        Prefix: str = "",
        Delimiter: str = "",
        MaxKeys: int = s3_store.MAX_LIST_KEYS,
        ContinuationToken: str = "",
        StartAfter: str = "",
    ) -> dict[str, Any]:
        with _errors("ListObjectsV2"):
            page = self._store.list(
                Bucket,
                prefix=Prefix,
                delimiter=Delimiter,
                after=ContinuationToken or StartAfter,
                max_keys=min(MaxKeys, s3_store.MAX_LIST_KEYS),
            )
        answer: dict[str, Any] = {
            "IsTruncated": page.truncated,
            "KeyCount": len(page.objects) + len(page.prefixes),
            "Contents": [
                {
                    "Key": o.key,
                    "Size": o.size,
                    "ETag": f'"{o.etag}"',
                    "LastModified": datetime.fromtimestamp(int(o.modified), UTC),
                }
                for o in page.objects
            ],
            "CommonPrefixes": [{"Prefix": p} for p in page.prefixes],
        }
        if not answer["Contents"]:
            del answer["Contents"]
        if page.truncated:
            answer["NextContinuationToken"] = page.next_after
        return answer

    def get_paginator(self, operation: str) -> Any:
        if operation != "list_objects_v2":
            raise NotImplementedError(f"the embedded S3 client pages only list_objects_v2, not {operation}")
        client = self

        class _Paginator:
            def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
                token = ""
                while True:
                    page = client.list_objects_v2(**kwargs, ContinuationToken=token)
                    yield page
                    if not page["IsTruncated"]:
                        return
                    token = page["NextContinuationToken"]

        return _Paginator()


def client() -> EmbeddedS3Client:
    """The client over this process's store (``s3_store.store()``)."""
    region = s3_store._setting("ANYJOB_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return EmbeddedS3Client(s3_store.store(), region)
