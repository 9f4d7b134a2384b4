"""The embedded S3 store (``jobs.awsapi.s3_store``) on its own, and ``jobs.storage`` over it:
the layout attacks (symbolic links planted in the store, keys that look like paths, keys that
differ only in case), atomic writes, which S3 ``s3://`` URIs reach, and the checksums' check
values. The HTTP side is ``tests/api/test_s3.py``."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from jobs import storage
from jobs.awsapi import s3_digest, s3_store
from jobs.awsapi.s3_store import Expected, ObjectMeta, S3Error, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "s3")
    s.create_bucket("team-data", "us-east-1", "1")
    return s


@pytest.fixture
def embedded(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """``jobs.storage``'s ``s3://`` on the embedded store (no S3 configured), in ``tmp_path``."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    settings.ANYJOB_S3 = "auto"
    settings.ANYJOB_LOCAL_ROLES = ""
    settings.ANYJOB_BACKEND = "local"
    settings.ANYJOB_S3_ROOT = tmp_path / "embedded"
    s = s3_store.store()
    s.create_bucket("team-data", "us-east-1", "1")
    return s


def put(store: Store, key: str, data: bytes, bucket: str = "team-data") -> s3_store.ObjectInfo:
    return store.put(bucket, key, io.BytesIO(data), Expected(length=len(data)), ObjectMeta())


def read(store: Store, key: str, bucket: str = "team-data") -> bytes:
    _, stream = store.open(bucket, key)
    with stream:
        return stream.read()


def blob_path(store: Store, key: str) -> Path:
    blob = store.head("team-data", key).blob
    return store.path / "blobs" / blob[:2] / blob


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() or p.is_symlink()]


# --- attacks on the store's files -------------------------------------------------------------


def test_a_blob_replaced_by_a_symlink_is_not_followed(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_bytes(b"the server's secret")
    put(store, "model.tar.gz", b"the real bytes")
    target = blob_path(store, "model.tar.gz")
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(S3Error) as refused:
        read(store, "model.tar.gz")
    assert refused.value.code == "InternalError" and "symbolic link" in refused.value.message
    assert b"secret" not in refused.value.message.encode()


def test_a_blob_directory_replaced_by_a_symlink_is_not_written_through(store: Store, tmp_path: Path) -> None:
    """Every ``blobs/<xx>`` planted as a link to a folder outside: a PUT fails, nothing lands
    outside, the object does not appear."""
    outside = tmp_path / "outside"
    outside.mkdir()
    blobs = store.path / "blobs"
    for i in range(256):
        (blobs / f"{i:02x}").symlink_to(outside, target_is_directory=True)
    with pytest.raises(S3Error) as refused:
        put(store, "x", b"data")
    assert refused.value.code == "InternalError"
    assert list(outside.iterdir()) == []
    assert store.list("team-data").objects == []
    assert list((store.path / "tmp").iterdir()) == []


def test_a_tmp_folder_replaced_by_a_symlink_is_not_written_through(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.path / "tmp").rmdir()
    (store.path / "tmp").symlink_to(outside, target_is_directory=True)
    with pytest.raises(S3Error):
        put(store, "x", b"data")
    assert list(outside.iterdir()) == []


def test_an_index_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "s3"
    root.mkdir()
    decoy = tmp_path / "decoy.sqlite3"
    decoy.write_bytes(b"")
    (root / "index.sqlite3").symlink_to(decoy)
    with pytest.raises(S3Error) as refused:
        Store(root).buckets()
    assert refused.value.code == "InternalError"
    assert decoy.read_bytes() == b""


def test_keys_that_look_like_paths_stay_rows(store: Store) -> None:
    """A key never names a file: the store's own names as keys are plain objects, and the
    files of the store are untouched."""
    index_before = (store.path / "index.sqlite3").stat().st_size
    for key in ("index.sqlite3", "blobs/00", "tmp/x.part", "/etc/passwd", "a//b"):
        put(store, key, key.encode())
    for key in ("index.sqlite3", "blobs/00", "tmp/x.part", "/etc/passwd", "a//b"):
        assert read(store, key) == key.encode()
    assert (store.path / "index.sqlite3").stat().st_size >= index_before  # still the database
    assert Store(store.path).bucket("team-data") is not None
    assert list((store.path / "tmp").iterdir()) == []
    for key in ("../index.sqlite3", "a/../../x", "./x", "x/.", "nul\x00", "k" * 1025):
        with pytest.raises(S3Error) as refused:
            put(store, key, b"evil")
        assert refused.value.code in ("InvalidArgument", "KeyTooLongError")
    assert len(store.list("team-data").objects) == 5


def test_keys_differing_in_case_and_files_beside_folders(store: Store) -> None:
    for key in ("Train.csv", "train.csv", "TRAIN.CSV", "a", "a/", "a/b", "a/b/c"):
        put(store, key, key.encode())
    assert [o.key for o in store.list("team-data").objects] == [
        "TRAIN.CSV", "Train.csv", "a", "a/", "a/b", "a/b/c", "train.csv"
    ]  # fmt: skip
    assert read(store, "train.csv") == b"train.csv" and read(store, "Train.csv") == b"Train.csv"
    store.delete("team-data", "a")
    assert read(store, "a/b") == b"a/b"
    listing = store.list("team-data", prefix="a", delimiter="/")
    assert listing.prefixes == ["a/"] and listing.objects == []


def test_bucket_names_differing_in_case_are_refused_not_merged(store: Store) -> None:
    with pytest.raises(S3Error) as upper:
        store.create_bucket("Team-Data", "us-east-1", "2")
    assert upper.value.code == "InvalidBucketName"
    with pytest.raises(S3Error) as bucket:
        read(store, "x", bucket="Team-Data")
    assert bucket.value.code == "NoSuchBucket"


# --- atomic, streamed writes --------------------------------------------------------------------


class Failing(io.RawIOBase):
    """A body that breaks after ``good`` bytes (a client gone mid-upload)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise ConnectionResetError("the client went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_a_failed_overwrite_leaves_the_old_object_and_nothing_else(store: Store) -> None:
    put(store, "k", b"old")
    with pytest.raises(ConnectionResetError):
        store.put("team-data", "k", Failing(3 * 1024 * 1024), Expected(length=10 * 1024 * 1024), ObjectMeta())
    assert read(store, "k") == b"old"
    assert list((store.path / "tmp").iterdir()) == []
    assert len(files_under(store.path / "blobs")) == 1
    with pytest.raises(S3Error) as short:
        store.put("team-data", "k", io.BytesIO(b"12345"), Expected(length=6), ObjectMeta())
    assert short.value.code == "IncompleteBody"
    assert read(store, "k") == b"old"


def test_a_reader_keeps_the_version_it_opened(store: Store) -> None:
    put(store, "k", b"a" * 3_000_000)
    _, stream = store.open("team-data", "k")
    put(store, "k", b"b" * 10)
    with stream:
        assert stream.read() == b"a" * 3_000_000
    assert read(store, "k") == b"b" * 10
    assert len(files_under(store.path / "blobs")) == 1  # the old blob is gone once closed


def test_parallel_writers_of_one_key_leave_one_whole_object(store: Store) -> None:
    bodies = [bytes([i]) * 2_000_000 for i in range(6)]
    threads = [threading.Thread(target=put, args=(store, "same", body)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read(store, "same") in bodies
    assert len(files_under(store.path / "blobs")) == 1


def test_copy_is_a_link_and_independent(store: Store) -> None:
    put(store, "src", b"payload")
    store.copy("team-data", "src", "team-data", "dst", None)
    assert blob_path(store, "src").stat().st_ino == blob_path(store, "dst").stat().st_ino
    store.delete("team-data", "src")
    assert read(store, "dst") == b"payload"


# --- checksums ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "check"),
    [("crc32", 0xCBF43926), ("crc32c", 0xE3069283), ("crc64nvme", 0xAE8B14860A799888)],
)
def test_crc_check_values(algorithm: str, check: int) -> None:
    """The catalogue's check values (the CRC of ``123456789``), fed in two pieces."""
    h = s3_digest.hasher(algorithm)
    h.update(b"1234")
    h.update(b"56789")
    assert int.from_bytes(h.digest(), "big") == check


def test_checksums_are_checked_and_kept(store: Store) -> None:
    data = b"some data"
    sha = hashlib.sha256(data).digest()
    info = store.put("team-data", "k", io.BytesIO(data), Expected(checksums={"sha256": sha}), ObjectMeta())
    assert info.meta.checksums == {"sha256": s3_digest.b64(sha)}
    with pytest.raises(S3Error) as bad:
        store.put(
            "team-data", "k2", io.BytesIO(data), Expected(checksums={"sha256": b"0" * 32}), ObjectMeta()
        )
    assert bad.value.code == "BadDigest"
    with pytest.raises(S3Error):
        store.head("team-data", "k2")


# --- which S3 s3:// URIs reach ------------------------------------------------------------------


def test_mode_is_embedded_unless_an_s3_is_configured(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    settings.ANYJOB_S3, settings.ANYJOB_LOCAL_ROLES, settings.ANYJOB_BACKEND = "auto", "", "local"
    assert s3_store.mode() == "embedded" and storage.s3_embedded()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert s3_store.mode() == "aws"
    settings.ANYJOB_S3 = "embedded"
    assert s3_store.mode() == "embedded"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    settings.ANYJOB_S3 = "auto"
    settings.ANYJOB_BACKEND = "sagemaker"
    assert s3_store.mode() == "aws"
    settings.ANYJOB_BACKEND = "local"
    settings.ANYJOB_LOCAL_ROLES = '{"arn:aws:iam::000000000000:role/r": {"profile": "p"}}'
    assert s3_store.mode() == "aws"
    settings.ANYJOB_S3 = "aws"
    settings.ANYJOB_LOCAL_ROLES = ""
    assert s3_store.mode() == "aws"


def test_storage_s3_uris_on_the_embedded_store(embedded: Store, tmp_path: Path) -> None:
    storage.put_bytes(b"hello", "s3://team-data/in/hello.txt", sha256=hashlib.sha256(b"hello").hexdigest())
    assert read(embedded, "in/hello.txt") == b"hello"
    assert storage.exists("s3://team-data/in/hello.txt") and not storage.exists("s3://team-data/in/nope")
    assert storage.size("s3://team-data/in/hello.txt") == 5
    assert storage.stored_sha256("s3://team-data/in/hello.txt") == hashlib.sha256(b"hello").hexdigest()
    assert storage.read_bytes("s3://team-data/in/hello.txt", 100) == b"hello"
    assert storage.head("s3://team-data/in/hello.txt") == (5, hashlib.md5(b"hello").hexdigest())
    assert storage.download_url("s3://team-data/in/hello.txt") is None  # streamed by the web process
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    storage.upload_file(local, "s3://team-data/in/big.bin")
    storage.copy("s3://team-data/in/big.bin", "s3://team-data/out/big.bin", sha256="abc")
    assert storage.stored_sha256("s3://team-data/out/big.bin") == "abc"
    back = tmp_path / "back.bin"
    storage.download_file("s3://team-data/out/big.bin", back)
    assert back.read_bytes() == local.read_bytes()
    assert [o.relative for o in storage.list_prefix("s3://team-data/in/")] == ["big.bin", "hello.txt"]
    storage.delete("s3://team-data/in/hello.txt")
    with pytest.raises(storage.NotFound):
        storage.read_bytes("s3://team-data/in/hello.txt", 100)
    with pytest.raises(storage.NotFound) as no_bucket:
        storage.read_bytes("s3://no-such-bucket/x", 100)
    assert "NoSuchBucket (404)" in no_bucket.value.detail


def test_stage_prefix_reads_the_embedded_store_as_sagemaker_lays_it_out(
    embedded: Store, tmp_path: Path
) -> None:
    for key in ("train/a.csv", "train/sub/b.csv", "train/folder/", "training/c.csv"):
        put(embedded, key, key.encode())
    staged = storage.stage_prefix("s3://team-data/train/", tmp_path / "channel")
    assert (staged.files, staged.bytes) == (2, len(b"train/a.csv") + len(b"train/sub/b.csv"))
    assert (tmp_path / "channel" / "sub" / "b.csv").read_bytes() == b"train/sub/b.csv"
    assert (tmp_path / "channel" / "folder").is_dir()
    with pytest.raises(storage.ChannelError) as empty:
        storage.stage_prefix("s3://team-data/nothing/", tmp_path / "empty")
    assert "No S3 objects found" in str(empty.value)
    with pytest.raises(storage.ChannelError) as no_bucket:
        storage.stage_prefix("s3://no-such-bucket/x/", tmp_path / "none")
    assert "No S3 objects found" in str(no_bucket.value)
