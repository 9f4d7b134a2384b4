"""The embedded S3 store: buckets and objects under anyjob's artifact store, in files.

Both the S3 REST-XML service (``jobs.awsapi.s3``, for boto3, the CLI and the SDKs) and
``jobs.storage`` (``s3://`` URIs of the local backend, through ``jobs.awsapi.s3_client``) read
and write it, so an object uploaded with ``aws s3 cp`` is the object a local job stages.
No Django at module level: job processes use it before (or without) Django.

Layout (``root()``, by default ``<artifact store>/s3``)::

    index.sqlite3        buckets, objects, multipart uploads and parts: names, sizes, ETags,
                         content types, user metadata, checksums (WAL mode: the web server,
                         the workers and job processes share it)
    blobs/<xx>/<id>      the bytes of one object or one part; ``id`` is random, never derived
                         from a key
    tmp/<id>.part        a write in progress, renamed into ``blobs/`` once complete

A key is a row, never a path: ``a``, ``a/`` and ``a/b`` coexist; ``A`` and ``a`` are two
objects; no key can name a file outside ``blobs/``, and none can collide with the index.
Blobs never change once written (an overwrite writes a new blob, then drops the old), so a
reader holding a blob open reads one version whole, and CopyObject is a hard link.

Every directory below ``root`` is opened one component at a time with ``O_NOFOLLOW`` and
every blob with ``O_NOFOLLOW`` and checked to be a regular file, so a symbolic link planted
in the store (``blobs/ab`` → ``/etc``) fails the request instead of being followed.

Writes are atomic (a temporary file, renamed, then one transaction) and streamed (blocks of
1 MiB, never the whole body in memory); a failed, refused or aborted upload leaves nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jobs.awsapi import s3_digest

BLOCK = 1024 * 1024
#: S3's limits: a single PUT (and one part), an object's key in UTF-8, parts per upload,
#: the smallest part but the last, keys per DeleteObjects, keys per listing page.
MAX_PUT_BYTES = 5 * 1024**3
MAX_OBJECT_BYTES = 5 * 1024**4
MAX_KEY_BYTES = 1024
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * 1024**2
MAX_DELETE_KEYS = 1000
MAX_LIST_KEYS = 1000
#: User metadata (``x-amz-meta-*``): S3 allows 2 KB of names and values together.
MAX_METADATA_BYTES = 2048
#: Multipart uploads not completed or aborted after this many seconds are removed
#: (``sweep``; ``ANYJOB_S3_MULTIPART_MAX_AGE_HOURS``).
DEFAULT_UPLOAD_MAX_AGE = 24 * 3600
#: Temporary files older than this are a crashed write's leftovers (``sweep``).
_TMP_MAX_AGE = 6 * 3600

_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, modified REAL NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
    created REAL NOT NULL, meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, created);
CREATE TABLE IF NOT EXISTS parts (
    upload TEXT NOT NULL, number INTEGER NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, modified REAL NOT NULL, checksums TEXT NOT NULL,
    PRIMARY KEY (upload, number)
) WITHOUT ROWID;
"""


class S3Error(Exception):
    """An S3 error answer: ``code`` and ``message`` as S3 words them, the HTTP ``status``, and
    the extra elements S3 puts in its ``<Error>`` (``Key``, ``BucketName``, ``ProposedSize``…)."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status
        self.fields = {k: str(v) for k, v in fields.items() if v is not None}


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404, BucketName=bucket)


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=key)


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may "
        "have been aborted or completed.",
        404,
        UploadId=upload_id,
    )


# --- configuration ----------------------------------------------------------------------------


def _setting(name: str, default: str = "") -> str:
    """A setting from Django's settings once they are loaded in this process, else from the
    environment (a job's process before ``django.setup``, a script)."""
    conf = sys.modules.get("django.conf")
    if conf is not None and conf.settings.configured and hasattr(conf.settings, name):
        value = getattr(conf.settings, name)
        return "" if value is None else str(value)
    return os.environ.get(name, default)


def root() -> Path:
    """Where the store lives: ``ANYJOB_S3_ROOT`` (webapp/settings.py derives it from the
    artifact store: ``<ANYJOB_ARTIFACT_STORE>/s3`` for a ``file://`` store, else ``var/s3``)."""
    configured = _setting("ANYJOB_S3_ROOT")
    if configured:
        return Path(configured)
    var = os.environ.get("ANYJOB_VAR_DIR") or str(Path(__file__).resolve().parents[2] / "var")
    return Path(var) / "artifacts" / "s3"


def mode() -> str:
    """``embedded`` or ``aws``: where ``s3://`` URIs of ``jobs.storage`` go.

    ``ANYJOB_S3=embedded``/``aws`` says it outright. Unset (or ``auto``): ``aws`` as soon as
    this process is pointed at an S3 of its own — ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` set, the ``sagemaker`` backend, or execution roles mapped to real
    credentials (``ANYJOB_LOCAL_ROLES``) — else ``embedded``, the store this module keeps.
    Decided on each call: a test that sets ``AWS_ENDPOINT_URL_S3`` gets boto3 at once.
    """
    chosen = _setting("ANYJOB_S3", "auto").strip().lower() or "auto"
    if chosen in ("embedded", "aws"):
        return chosen
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return "aws"
    if _setting("ANYJOB_BACKEND", "local") == "sagemaker" or _setting("ANYJOB_LOCAL_ROLES").strip():
        return "aws"
    return "embedded"


def upload_max_age() -> float:
    hours = _setting("ANYJOB_S3_MULTIPART_MAX_AGE_HOURS")
    try:
        return float(hours) * 3600 if hours else DEFAULT_UPLOAD_MAX_AGE
    except ValueError:
        return DEFAULT_UPLOAD_MAX_AGE


# --- names ------------------------------------------------------------------------------------


def check_bucket_name(name: str) -> None:
    """``InvalidBucketName`` unless ``name`` is a name S3 gives a general purpose bucket."""
    import ipaddress

    problem = None
    if not 3 <= len(name) <= 63:
        problem = "must be between 3 (min) and 63 (max) characters long"
    elif not all(c in _BUCKET_CHARS for c in name):
        problem = "can consist only of lowercase letters, numbers, periods (.), and hyphens (-)"
    elif not (name[0].isalnum() and name[-1].isalnum()):
        problem = "must begin and end with a letter or number"
    elif ".." in name:
        problem = "must not contain two adjacent periods"
    elif name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
        ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    ):
        problem = "must not use a reserved prefix or suffix"
    else:
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(name)
            problem = "must not be formatted as an IP address"
    if problem:
        raise S3Error(
            "InvalidBucketName",
            f"The specified bucket is not valid: a bucket name {problem}.",
            BucketName=name,
        )


def check_key(key: str) -> None:
    """Refuse a key S3 would refuse (empty, over 1,024 bytes) and the keys anyjob refuses
    because the local backend stages keys as paths (NUL, ``.`` or ``..`` segments)."""
    if not key:
        raise S3Error("InvalidArgument", "An object key must not be empty.", Key=key)
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "An object key must be valid UTF-8.") from None
    if len(raw) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long", Size=len(raw), MaxSizeAllowed=MAX_KEY_BYTES)
    if "\x00" in key:
        raise S3Error("InvalidArgument", "An object key must not contain a NUL character.", Key=key)
    if any(part in (".", "..") for part in key.split("/")):
        raise S3Error(
            "InvalidArgument",
            "An object key must not have '.' or '..' segments on this server (a job would stage "
            "it as a path).",
            Key=key,
        )


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    name: str
    region: str
    owner: str
    created: float


@dataclass
class ObjectMeta:
    """What is kept beside an object's bytes (the headers S3 gives back)."""

    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    #: ``Content-Encoding``, ``Content-Disposition``, ``Cache-Control``, ``Content-Language``,
    #: ``Expires``, as sent.
    headers: dict[str, str] = field(default_factory=dict)
    #: algorithm (``crc32``…) → base64 digest (``…-N`` for a composite one).
    checksums: dict[str, str] = field(default_factory=dict)
    checksum_type: str = ""
    parts: int = 0

    def dumps(self) -> str:
        return json.dumps(
            {
                "content_type": self.content_type,
                "metadata": self.metadata,
                "headers": self.headers,
                "checksums": self.checksums,
                "checksum_type": self.checksum_type,
                "parts": self.parts,
            }
        )

    @classmethod
    def loads(cls, text: str) -> ObjectMeta:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # hex, without quotes (``…-N`` for a multipart object)
    modified: float
    meta: ObjectMeta
    blob: str = ""


@dataclass(frozen=True)
class Upload:
    id: str
    bucket: str
    key: str
    owner: str
    created: float
    meta: ObjectMeta


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str
    modified: float
    checksums: dict[str, str]
    blob: str = ""


@dataclass
class Listing:
    """One page of a listing: objects and common prefixes in key order, and where the next
    page starts (``next_after``: the last key or prefix returned) when there is one."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    next_after: str = ""


@dataclass
class Expected:
    """What an upload's body must match: ``Content-MD5`` (raw), the SigV4 payload hash (hex),
    the flexible checksums (algorithm → raw digest), and its length."""

    length: int | None = None
    md5: bytes | None = None
    sha256_hex: str | None = None
    checksums: dict[str, bytes] = field(default_factory=dict)
    #: Checksums to compute and keep even though no value was sent (a trailer to come, or the
    #: upload's algorithm).
    compute: set[str] = field(default_factory=set)
    #: Called once the body is read: more checksums to check (an aws-chunked body's trailer).
    late: Callable[[], dict[str, bytes]] | None = None


# --- the store --------------------------------------------------------------------------------


class Store:
    """One store root. Thread-safe; one SQLite connection per thread (and per process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()

    # plumbing ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name in ("blobs", "tmp"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.path / name, 0o700)
            self._ready = True

    def _db(self) -> sqlite3.Connection:
        self._setup()
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        index = self.path / "index.sqlite3"
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.lstat(index).st_mode):
                raise S3Error("InternalError", f"{index} is not a regular file; the store refuses it", 500)
        conn = sqlite3.connect(index, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _dir(self, *parts: str, create: bool = False) -> int:
        """A descriptor of ``root/parts…``, each component opened without following a link."""
        self._setup()
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _planted(f"{'/'.join(parts)}") from None
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def open_blob(self, blob: str) -> IO[bytes]:
        """The blob ``blob`` opened for reading: a regular file reached without links."""
        dir_fd = self._dir("blobs", blob[:2])
        try:
            fd = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _planted(f"blobs/{blob[:2]}/{blob}") from None
            raise
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _planted(f"blobs/{blob[:2]}/{blob}")
        return os.fdopen(fd, "rb", buffering=BLOCK)

    def _unlink_blob(self, blob: str) -> None:
        with contextlib.suppress(OSError):
            dir_fd = self._dir("blobs", blob[:2])
            try:
                os.unlink(blob, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)

    @contextlib.contextmanager
    def _new_blob(self) -> Iterator[tuple[IO[bytes], list[str]]]:
        """A temporary file to write; on a clean exit the caller has set ``names[0]`` to keep
        it: it is renamed to that blob. On any error it is removed."""
        tmp_fd = self._dir("tmp")
        name = secrets.token_hex(16) + ".part"
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=tmp_fd
        )
        out = os.fdopen(fd, "wb", buffering=0)
        names: list[str] = []
        try:
            yield out, names
            out.close()
            if names:
                blob = names[0]
                target = self._dir("blobs", blob[:2], create=True)
                try:
                    os.rename(name, blob, src_dir_fd=tmp_fd, dst_dir_fd=target)
                finally:
                    os.close(target)
            else:
                os.unlink(name, dir_fd=tmp_fd)
        except BaseException:
            out.close()
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp_fd)
            raise
        finally:
            os.close(tmp_fd)

    # buckets ----------------------------------------------------------------------------------

    def bucket(self, name: str) -> Bucket | None:
        row = (
            self._db()
            .execute("SELECT name, region, owner, created FROM buckets WHERE name = ?", (name,))
            .fetchone()
        )
        return Bucket(*row) if row else None

    def require_bucket(self, name: str) -> Bucket:
        found = self.bucket(name)
        if found is None:
            raise no_such_bucket(name)
        return found

    def buckets(self) -> list[Bucket]:
        rows = self._db().execute("SELECT name, region, owner, created FROM buckets ORDER BY name").fetchall()
        return [Bucket(*row) for row in rows]

    def create_bucket(self, name: str, region: str, owner: str) -> Bucket:
        check_bucket_name(name)
        with self._write() as db:
            row = db.execute("SELECT owner FROM buckets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row[0] == owner:
                    raise S3Error(
                        "BucketAlreadyOwnedByYou",
                        "Your previous request to create the named bucket succeeded and you already own it.",
                        409,
                        BucketName=name,
                    )
                raise S3Error(
                    "BucketAlreadyExists",
                    "The requested bucket name is not available. The bucket namespace is shared by all "
                    "users of the system. Please select a different name and try again.",
                    409,
                    BucketName=name,
                )
            created = time.time()
            db.execute("INSERT INTO buckets VALUES (?, ?, ?, ?)", (name, region, owner, created))
        return Bucket(name, region, owner, created)

    def delete_bucket(self, name: str) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone() is None:
                raise no_such_bucket(name)
            if db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise S3Error(
                    "BucketNotEmpty", "The bucket you tried to delete is not empty", 409, BucketName=name
                )
            uploads = [r[0] for r in db.execute("SELECT id FROM uploads WHERE bucket = ?", (name,))]
            blobs = self._drop_uploads(db, uploads)
            db.execute("DELETE FROM buckets WHERE name = ?", (name,))
        for blob in blobs:
            self._unlink_blob(blob)

    # objects ----------------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo:
        row = (
            self._db()
            .execute(
                "SELECT size, etag, modified, meta, blob FROM objects WHERE bucket = ? AND key = ?",
                (bucket, key),
            )
            .fetchone()
        )
        if row is None:
            self.require_bucket(bucket)
            raise no_such_key(key)
        return ObjectInfo(bucket, key, row[0], row[1], row[2], ObjectMeta.loads(row[3]), row[4])

    def open(self, bucket: str, key: str) -> tuple[ObjectInfo, IO[bytes]]:
        """The object and a stream over its bytes (retried once if an overwrite removed the
        blob between the lookup and the open)."""
        for attempt in (1, 2):
            info = self.head(bucket, key)
            try:
                return info, self.open_blob(info.blob)
            except FileNotFoundError:
                if attempt == 2:
                    raise S3Error(
                        "InternalError", "The object changed while it was read; try again.", 500
                    ) from None
        raise AssertionError("unreachable")

    def _receive(
        self, out: IO[bytes], stream: IO[bytes], expected: Expected, limit: int
    ) -> tuple[int, s3_digest.Digests]:
        """Copy ``stream`` into ``out`` checking every expectation; the digests computed."""
        digests = s3_digest.Digests(
            set(expected.checksums) | expected.compute, sha256=bool(expected.sha256_hex)
        )
        size = 0
        while True:
            block = stream.read(BLOCK)
            if not block:
                break
            size += len(block)
            if size > limit or (expected.length is not None and size > expected.length):
                if expected.length is not None and size > expected.length:
                    raise S3Error("IncompleteBody", "The request body is longer than its Content-Length.")
                raise _too_large(size, limit)
            digests.update(block)
            try:
                out.write(block)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise S3Error(
                        "ServiceUnavailable", "anyjob's S3 store is out of disk space.", 503
                    ) from None
                raise
        if expected.length is not None and size != expected.length:
            raise S3Error(
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )
        if expected.late is not None:
            expected.checksums.update(expected.late())
        verify(digests, expected)
        return size, digests

    def put(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        expected: Expected,
        meta: ObjectMeta,
        *,
        limit: int = MAX_PUT_BYTES,
    ) -> ObjectInfo:
        """Store ``stream`` as ``bucket``/``key`` (replacing what was there) once it is whole
        and matches ``expected``; until then nothing is visible, and after a failure nothing
        is left. ``limit``: S3's single PUT (anyjob's own processes may write more at once)."""
        check_key(key)
        self.require_bucket(bucket)
        if expected.length is not None and expected.length > limit:
            raise _too_large(expected.length, limit)
        blob = secrets.token_hex(16)
        with self._new_blob() as (out, keep):
            size, digests = self._receive(out, stream, expected, limit)
            meta.checksums = {a: s3_digest.b64(h.digest()) for a, h in digests.checksums.items()}
            meta.checksum_type = "FULL_OBJECT" if meta.checksums else ""
            meta.parts = 0
            keep.append(blob)
        info = ObjectInfo(bucket, key, size, digests.md5.hexdigest(), time.time(), meta, blob)
        self._commit_object(info)
        return info

    def _commit_object(self, info: ObjectInfo) -> None:
        """Make the written blob ``info.blob`` the object (the old blob is removed after)."""
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM buckets WHERE name = ?", (info.bucket,)).fetchone() is None:
                    raise no_such_bucket(info.bucket)
                old = db.execute(
                    "SELECT blob FROM objects WHERE bucket = ? AND key = ?", (info.bucket, info.key)
                ).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.bucket,
                        info.key,
                        info.blob,
                        info.size,
                        info.etag,
                        info.modified,
                        info.meta.dumps(),
                    ),
                )
        except BaseException:
            self._unlink_blob(info.blob)
            raise
        if old is not None:
            self._unlink_blob(old[0])

    def delete(self, bucket: str, key: str) -> None:
        """Remove the object if there is one (S3 answers 204 either way)."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
                raise no_such_bucket(bucket)
            row = db.execute(
                "SELECT blob FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
            ).fetchone()
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
        if row is not None:
            self._unlink_blob(row[0])

    def copy(
        self, src_bucket: str, src_key: str, bucket: str, key: str, meta: ObjectMeta | None
    ) -> ObjectInfo:
        """``bucket``/``key`` becomes a copy of the source (its metadata, or ``meta``): a hard
        link to the source's blob, so any size copies at once."""
        check_key(key)
        self.require_bucket(bucket)
        source = self.head(src_bucket, src_key)
        if source.size > MAX_PUT_BYTES:
            raise S3Error(
                "InvalidRequest",
                "The specified copy source is larger than the maximum allowable size for a copy source: "
                f"{MAX_PUT_BYTES}",
            )
        kept = source.meta if meta is None else meta
        if meta is not None:
            kept.checksums, kept.checksum_type, kept.parts = (
                source.meta.checksums,
                source.meta.checksum_type,
                source.meta.parts,
            )
        blob = secrets.token_hex(16)
        src_dir = self._dir("blobs", source.blob[:2])
        try:
            dst_dir = self._dir("blobs", blob[:2], create=True)
            try:
                os.link(source.blob, blob, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
            except FileNotFoundError:
                raise S3Error(
                    "InternalError", "The source object changed while it was copied; try again.", 500
                ) from None
            finally:
                os.close(dst_dir)
        finally:
            os.close(src_dir)
        info = ObjectInfo(bucket, key, source.size, source.etag, time.time(), kept, blob)
        self._commit_object(info)
        return info

    def list(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        after: str = "",
        max_keys: int = MAX_LIST_KEYS,
    ) -> Listing:
        """Objects whose key starts with ``prefix`` and sorts after ``after``, in UTF-8 order,
        keys with ``delimiter`` after the prefix rolled up into common prefixes (each counts
        as one of ``max_keys``; a prefix that sorts at or before ``after`` is not repeated)."""
        self.require_bucket(bucket)
        db = self._db()
        listing = Listing([], [], False)
        cursor, inclusive = (after, False) if after >= prefix else (prefix, True)
        count = 0
        while True:
            op = ">=" if inclusive else ">"
            rows = db.execute(
                f"SELECT key, size, etag, modified, meta FROM objects WHERE bucket = ? AND key {op} ? "  # noqa: S608
                "ORDER BY key LIMIT 1000",
                (bucket, cursor),
            ).fetchall()
            if not rows:
                return listing
            for key, size, etag, modified, meta in rows:
                if not key.startswith(prefix):
                    return listing
                cursor, inclusive = key, False
                common = None
                if delimiter:
                    at = key.find(delimiter, len(prefix))
                    if at >= 0:
                        common = key[: at + len(delimiter)]
                if common is not None:
                    if common <= after or (listing.prefixes and listing.prefixes[-1] == common):
                        cursor, inclusive = common + "\U0010ffff", True
                        break
                    if count == max_keys:
                        listing.truncated = True
                        return listing
                    listing.prefixes.append(common)
                    listing.next_after = common
                    # Skip the rest of that prefix in one step.
                    cursor, inclusive = common + "\U0010ffff", True
                    count += 1
                    break
                if count == max_keys:
                    listing.truncated = True
                    return listing
                listing.objects.append(ObjectInfo(bucket, key, size, etag, modified, ObjectMeta.loads(meta)))
                listing.next_after = key
                count += 1
            else:
                if len(rows) < 1000:
                    return listing

    # multipart --------------------------------------------------------------------------------

    def create_upload(self, bucket: str, key: str, owner: str, meta: ObjectMeta) -> Upload:
        check_key(key)
        upload = Upload(secrets.token_urlsafe(32), bucket, key, owner, time.time(), meta)
        with self._write() as db:
            if db.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
                raise no_such_bucket(bucket)
            db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                (upload.id, bucket, key, owner, upload.created, meta.dumps()),
            )
        return upload

    def upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        row = (
            self._db()
            .execute(
                "SELECT owner, created, meta FROM uploads WHERE id = ? AND bucket = ? AND key = ?",
                (upload_id, bucket, key),
            )
            .fetchone()
        )
        if row is None:
            self.require_bucket(bucket)
            raise no_such_upload(upload_id)
        return Upload(upload_id, bucket, key, row[0], row[1], ObjectMeta.loads(row[2]))

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, stream: IO[bytes], expected: Expected
    ) -> Part:
        if not 1 <= number <= MAX_PARTS:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=number,
            )
        upload = self.upload(bucket, key, upload_id)
        if expected.length is not None and expected.length > MAX_PUT_BYTES:
            raise _too_large(expected.length, MAX_PUT_BYTES)
        algorithm = upload.meta.checksum_type and next(iter(upload.meta.checksums), "")
        if algorithm:
            expected.compute.add(algorithm)
        blob = secrets.token_hex(16)
        with self._new_blob() as (out, keep):
            size, digests = self._receive(out, stream, expected, MAX_PUT_BYTES)
            keep.append(blob)
        checksums = {a: s3_digest.b64(h.digest()) for a, h in digests.checksums.items()}
        part = Part(number, size, digests.md5.hexdigest(), time.time(), checksums, blob)
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM uploads WHERE id = ?", (upload_id,)).fetchone() is None:
                    raise no_such_upload(upload_id)
                old = db.execute(
                    "SELECT blob FROM parts WHERE upload = ? AND number = ?", (upload_id, number)
                ).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (upload_id, number, blob, size, part.etag, part.modified, json.dumps(checksums)),
                )
        except BaseException:
            self._unlink_blob(blob)
            raise
        if old is not None:
            self._unlink_blob(old[0])
        return part

    def parts(self, upload_id: str, *, after: int = 0, limit: int = MAX_PARTS) -> list[Part]:
        rows = (
            self._db()
            .execute(
                "SELECT number, size, etag, modified, checksums, blob FROM parts "
                "WHERE upload = ? AND number > ? "
                "ORDER BY number LIMIT ?",
                (upload_id, after, limit),
            )
            .fetchall()
        )
        return [Part(n, s, e, m, json.loads(c), b) for n, s, e, m, c, b in rows]

    def uploads(
        self, bucket: str, *, prefix: str = "", after_key: str = "", after_id: str = "", limit: int = 1000
    ) -> list[Upload]:
        self.require_bucket(bucket)
        rows = (
            self._db()
            .execute(
                "SELECT id, key, owner, created, meta FROM uploads "
                "WHERE bucket = ? AND (key > ? OR (key = ? AND id > ?)) "
                "ORDER BY key, created, id",
                (bucket, after_key, after_key, after_id),
            )
            .fetchall()
        )
        found = [
            Upload(i, bucket, k, o, c, ObjectMeta.loads(m)) for i, k, o, c, m in rows if k.startswith(prefix)
        ]
        return found[:limit]

    def complete(self, bucket: str, key: str, upload_id: str, wanted: list[dict[str, Any]]) -> ObjectInfo:
        """Join the parts ``wanted`` names (``PartNumber``, ``ETag``, optional checksums) into
        the object. S3's rules: at least one part, ascending numbers, every part uploaded with
        that ETag, every part but the last at least 5 MiB."""
        upload = self.upload(bucket, key, upload_id)
        if not wanted:
            raise S3Error(
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema",
            )
        stored = {p.number: p for p in self.parts(upload_id)}
        chosen: list[Part] = []
        previous = 0
        for item in wanted:
            number = item["PartNumber"]
            if number <= previous:
                raise S3Error(
                    "InvalidPartOrder",
                    "The list of parts was not in ascending order. Parts must be ordered by part number.",
                    UploadId=upload_id,
                )
            previous = number
            part = stored.get(number)
            etag = str(item.get("ETag") or "").strip().strip('"')
            if (
                part is None
                or etag != part.etag
                or any(
                    part.checksums.get(a) not in (None, value)
                    for a, value in item.get("checksums", {}).items()
                )
            ):
                raise S3Error(
                    "InvalidPart",
                    "One or more of the specified parts could not be found.  The part may not have been "
                    "uploaded, "
                    "or the specified entity tag may not match the part's entity tag.",
                    UploadId=upload_id,
                    PartNumber=number,
                    ETag=etag,
                )
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_BYTES:
                raise S3Error(
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object size.",
                    ProposedSize=part.size,
                    MinSizeAllowed=MIN_PART_BYTES,
                    PartNumber=part.number,
                    ETag=part.etag,
                )
        meta = upload.meta
        algorithm = next(iter(meta.checksums), "") if meta.checksum_type else ""
        full = meta.checksum_type == "FULL_OBJECT" and algorithm
        digests = s3_digest.Digests({algorithm} if full else set())
        blob = secrets.token_hex(16)
        size = 0
        with self._new_blob() as (out, keep):
            for part in chosen:
                with self.open_blob(part.blob) as src:
                    if full:
                        while block := src.read(BLOCK):
                            digests.update(block)
                            out.write(block)
                    else:
                        _copy_range(src, out, part.size)
                size += part.size
            keep.append(blob)
        md5s = b"".join(bytes.fromhex(p.etag) for p in chosen)
        etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(chosen)}"
        meta.checksums = {}
        if full:
            meta.checksums = {algorithm: s3_digest.b64(digests.checksums[algorithm].digest())}
        elif algorithm and all(algorithm in p.checksums for p in chosen):
            raw = [
                s3_digest.decode_b64(p.checksums[algorithm], s3_digest.DIGEST_BYTES[algorithm]) or b""
                for p in chosen
            ]
            meta.checksums = {algorithm: s3_digest.composite(algorithm, raw)}
        meta.checksum_type = ("FULL_OBJECT" if full else "COMPOSITE") if meta.checksums else ""
        meta.parts = len(chosen)
        info = ObjectInfo(bucket, key, size, etag, time.time(), meta, blob)
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM uploads WHERE id = ?", (upload_id,)).fetchone() is None:
                    raise no_such_upload(upload_id)
                if db.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
                    raise no_such_bucket(bucket)
                old = db.execute(
                    "SELECT blob FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (bucket, key, blob, size, etag, info.modified, meta.dumps()),
                )
                drop = self._drop_uploads(db, [upload_id])
        except BaseException:
            self._unlink_blob(blob)
            raise
        for name in [*drop, *([old[0]] if old else [])]:
            self._unlink_blob(name)
        return info

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        self.upload(bucket, key, upload_id)
        with self._write() as db:
            blobs = self._drop_uploads(db, [upload_id])
        for blob in blobs:
            self._unlink_blob(blob)

    def _drop_uploads(self, db: sqlite3.Connection, upload_ids: list[str]) -> list[str]:
        """Delete the uploads' rows (in the caller's transaction); the blobs to remove after."""
        blobs: list[str] = []
        for upload_id in upload_ids:
            blobs += [r[0] for r in db.execute("SELECT blob FROM parts WHERE upload = ?", (upload_id,))]
            db.execute("DELETE FROM parts WHERE upload = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
        return blobs

    # housekeeping -----------------------------------------------------------------------------

    def sweep(self, max_age: float | None = None, *, now: float | None = None) -> int:
        """Abort every multipart upload started more than ``max_age`` seconds ago (S3's
        lifecycle rule ``AbortIncompleteMultipartUpload``), and remove crashed writes'
        temporary files. Returns how many uploads were aborted."""
        now = time.time() if now is None else now
        limit = upload_max_age() if max_age is None else max_age
        with self._write() as db:
            stale = [r[0] for r in db.execute("SELECT id FROM uploads WHERE created < ?", (now - limit,))]
            blobs = self._drop_uploads(db, stale)
        for blob in blobs:
            self._unlink_blob(blob)
        tmp = self._dir("tmp")
        try:
            for entry in os.scandir(tmp):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < now - _TMP_MAX_AGE:
                        os.unlink(entry.name, dir_fd=tmp)
        finally:
            os.close(tmp)
        return len(stale)


def verify(digests: s3_digest.Digests, expected: Expected) -> None:
    """``BadDigest``/``XAmzContentSHA256Mismatch`` when the body is not what was announced."""
    if expected.md5 is not None and digests.md5.digest() != expected.md5:
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
    if (
        expected.sha256_hex
        and digests.sha256 is not None
        and digests.sha256.hexdigest() != expected.sha256_hex
    ):
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=expected.sha256_hex,
            S3ComputedContentSHA256=digests.sha256.hexdigest(),
        )
    for algorithm, value in expected.checksums.items():
        if digests.checksums[algorithm].digest() != value:
            raise S3Error(
                "BadDigest",
                f"The {s3_digest.MEMBER[algorithm]} you specified did not match the calculated checksum.",
            )


def _too_large(size: int, limit: int) -> S3Error:
    return S3Error(
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        ProposedSize=size,
        MaxSizeAllowed=limit,
    )


def _planted(where: str) -> S3Error:
    return S3Error(
        "InternalError",
        f"anyjob's S3 store refused {where}: it is not a plain file or directory (a symbolic link?)",
        500,
    )


def _copy_range(src: IO[bytes], out: IO[bytes], length: int) -> None:
    """``length`` bytes from ``src`` to ``out``, in the kernel when it can."""
    src_fd, out_fd = src.fileno(), out.fileno()
    left = length
    try:
        while left > 0:
            moved = os.copy_file_range(src_fd, out_fd, min(left, 1 << 30))
            if moved == 0:
                break
            left -= moved
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while left > 0:
        block = src.read(min(BLOCK, left))
        if not block:
            break
        out.write(block)
        left -= len(block)
    if left:
        raise S3Error("InternalError", "A part of the upload is shorter than recorded.", 500)


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def store() -> Store:
    """The store at ``root()`` (one object per root and process)."""
    path = str(root())
    with _stores_lock:
        found = _stores.get(path)
        if found is None:
            found = _stores[path] = Store(Path(path))
        return found
