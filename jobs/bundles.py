"""Code bundles: the uploaded files as one normalised ``sourcedir.tar.gz``, stored by sha256.

The archive is deterministic (sorted members, mtime 0, uid/gid 0, mode 0644, or 0755 for
``.sh``, gzip mtime 0), so the same code always gives the same sha256 and is stored once, at
``<ANYJOB_ARTIFACT_STORE>/code/<sha256>/sourcedir.tar.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass

from jobs import storage


class BundleError(ValueError):
    """The files cannot make a bundle; the message says which file and why."""


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str


def clean_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BundleError("a file has no name")
    if "\x00" in name or "\\" in name:
        raise BundleError(f"{name!r}: file names may not contain NUL or backslash characters")
    if name.startswith("/"):
        raise BundleError(f"{name!r}: file names must be relative to the code folder, not absolute")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError(f"{name!r}: file names may not contain '..', '.' or empty parts")
    return posixpath.normpath(name)


def build(files: Mapping[str, bytes]) -> Bundle:
    """The normalised ``sourcedir.tar.gz`` of ``files`` (name → bytes) and its sha256."""
    if not files:
        raise BundleError("there are no files to bundle")
    cleaned: dict[str, bytes] = {}
    for name, data in files.items():
        clean = clean_name(name)
        if clean in cleaned:
            raise BundleError(f"{name!r} is given twice")
        cleaned[clean] = bytes(data)
    for clean in cleaned:  # "a" and "a/b" cannot both be files
        parent = clean.rsplit("/", 1)[0] if "/" in clean else None
        while parent:
            if parent in cleaned:
                raise BundleError(f"{parent!r} is a file, so {clean!r} cannot be inside it")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else None
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(cleaned):
            info = tarfile.TarInfo(name)
            info.size = len(cleaned[name])
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(cleaned[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    data = packed.getvalue()
    return Bundle(data=data, sha256=hashlib.sha256(data).hexdigest())


def uri_for(sha256: str, store: str) -> str:
    return f"{store.rstrip('/')}/code/{sha256}/sourcedir.tar.gz"


def store(bundle: Bundle, store_uri: str) -> str:
    """Store ``bundle`` under ``store_uri``; its URI. The key is the sha256 and writes are
    atomic, so an object already there is this bundle: the upload is skipped."""
    uri = uri_for(bundle.sha256, store_uri)
    if not storage.exists(uri):
        storage.put_bytes(bundle.data, uri, sha256=bundle.sha256)
    return uri


def job_uri(job_name: str, store_uri: str) -> str:
    """Where a job's own copy of its code goes: ``<store>/<job>/source/sourcedir.tar.gz`` (the
    SageMaker SDK's layout)."""
    return f"{store_uri.rstrip('/')}/{job_name}/source/sourcedir.tar.gz"


def stage_for_job(sha256: str, job_name: str, store_uri: str) -> str:
    """Copy the stored bundle ``sha256`` to the job's own place (skipped when an object with the
    same sha256 is there: a retried submit uploads nothing); its URI."""
    uri = job_uri(job_name, store_uri)
    if storage.stored_sha256(uri) != sha256:
        storage.copy(uri_for(sha256, store_uri), uri, sha256=sha256)
    return uri


def load(sha256: str, store_uri: str, *, max_bytes: int) -> dict[str, bytes]:
    """The files of the stored bundle ``sha256`` (``storage.NotFound`` when there is none)."""
    data = storage.read_bytes(uri_for(sha256, store_uri), max_bytes)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar:
            if info.isreg():
                stream = tar.extractfile(info)
                files[info.name] = stream.read() if stream is not None else b""
    return files
