"""jobs.storage against a real S3-protocol server on loopback and against temporary directories."""

from __future__ import annotations

import errno
import gzip
import io
import os
import re
import tarfile
import uuid
from pathlib import Path

import pytest
from botocore.config import Config

from jobs import aws, storage
from jobs.storage import ChannelError, NotFound, StorageError, TooLarge


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["s3", "file"])
def root(request, tmp_path: Path) -> str:
    """A URI prefix ending in "/" under which a test may store objects, for each scheme."""
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('bucket')}/some/where/"
    return (tmp_path / "store").as_uri() + "/"


def put(s3_client, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- parse ------------------------------------------------------------------------------------


def test_it_parses_s3_uris_taking_the_key_literally():
    loc = storage.parse("s3://my-bucket/a/b?c#d%20e")
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", "my-bucket", "a/b?c#d%20e")
    assert loc.uri == "s3://my-bucket/a/b?c#d%20e"


def test_it_parses_file_uris_percent_decoded():
    loc = storage.parse("file:///data/my%20files/x.csv")
    assert (loc.scheme, loc.bucket, loc.path) == ("file", "", Path("/data/my files/x.csv"))
    assert loc.uri == "file:///data/my%20files/x.csv"
    assert storage.parse(Path("/tmp/a b").as_uri()).path == Path("/tmp/a b")


def test_a_bare_bucket_is_a_prefix_but_not_an_object():
    assert storage.parse("s3://bkt", prefix=True).key == ""
    assert storage.parse("s3://bkt/", prefix=True).key == ""
    with pytest.raises(StorageError, match="no object key"):
        storage.parse("s3://bkt/")


@pytest.mark.parametrize(
    "uri",
    [
        "http://bucket/key",
        "https://bucket.s3.amazonaws.com/key",
        "S3://bucket/key",
        "data/train",
        "/data/train",
        "file:data/train",
        "file://host/data/train",
        "file://./data",
        "s3://",
        "s3:///key",
        "s3://bad bucket/key",
        "s3://bkt/" + "k" * 1020,
        "s3://bkt/a\x00b",
        "",
    ],
)
def test_it_refuses_uris_it_cannot_use(uri):
    with pytest.raises(StorageError):
        storage.parse(uri)


def test_storage_errors_are_value_errors_with_one_line_messages():
    with pytest.raises(ValueError, match=r"^'http://x/y' is not an s3:// or file:// URI$"):
        storage.parse("http://x/y")
    with pytest.raises(StorageError, match="longer than 1024 characters") as caught:
        storage.parse("s3://bkt/" + "k" * 2000)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


# --- single objects ---------------------------------------------------------------------------


def test_it_puts_reads_sizes_and_deletes_bytes(root):
    uri = root + "dir/blob.bin"
    assert not storage.exists(uri)
    storage.put_bytes(b"hello world", uri)
    assert storage.exists(uri)
    assert storage.size(uri) == 11
    assert storage.read_bytes(uri, max_bytes=11) == b"hello world"
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # deleting what is not there is fine


def test_it_refuses_a_read_over_the_limit(root):
    uri = root + "big"
    storage.put_bytes(b"x" * 100, uri)
    with pytest.raises(TooLarge, match="more than 99 bytes"):
        storage.read_bytes(uri, max_bytes=99)


def test_it_streams_reads(root):
    uri = root + "stream"
    data = os.urandom(3 * storage.CHUNK + 7)
    storage.put_bytes(data, uri)
    chunks = []
    with storage.open_read(uri) as stream:
        while chunk := stream.read(1000_000):
            chunks.append(chunk)
    assert b"".join(chunks) == data and len(chunks) > 1


def test_it_uploads_and_downloads_files(root, tmp_path):
    src = tmp_path / "model.tar.gz"
    src.write_bytes(os.urandom(70_000))
    uri = root + "out/job/output/model.tar.gz"
    storage.upload_file(src, uri)
    dest = tmp_path / "back" / "deep" / "model.tar.gz"
    storage.download_file(uri, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.tar.gz"]  # no temp left


def test_a_big_upload_goes_multipart(bucket, s3_client, tmp_path):
    src = tmp_path / "big"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # over the 8 MiB multipart threshold
    storage.upload_file(src, f"s3://{bucket}/big")
    head = s3_client.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == src.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # a multipart ETag counts its parts


def test_file_writes_are_atomic_and_create_parents(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    storage.put_bytes(b"one", target.as_uri())
    storage.put_bytes(b"two", target.as_uri())
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["c.txt"]
    assert target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("call", ["size", "read_bytes", "open_read", "download_file"])
def test_a_missing_object_is_not_found(root, tmp_path, call):
    uri = root + "nothing-here"
    args = {"read_bytes": (uri, 10), "download_file": (uri, tmp_path / "x")}.get(call, (uri,))
    with pytest.raises(NotFound, match="nothing-here"):
        getattr(storage, call)(*args)


def test_a_missing_bucket_is_not_found(s3_env):
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/key"
    assert not storage.exists(uri)
    with pytest.raises(NotFound, match="NoSuchBucket"):
        storage.put_bytes(b"x", uri)
    with pytest.raises(NotFound):
        storage.list_prefix(uri)
    storage.delete(uri)


def test_a_directory_is_not_a_file_object(tmp_path):
    assert not storage.exists(tmp_path.as_uri())
    with pytest.raises(StorageError, match="not a regular file"):
        storage.size(tmp_path.as_uri())
    with pytest.raises(StorageError):
        storage.read_bytes(tmp_path.as_uri(), 10)


# --- list_prefix ------------------------------------------------------------------------------


def test_it_lists_a_prefix(root):
    for name in ["b/2.txt", "a.txt", "b/1.txt"]:
        storage.put_bytes(name.encode(), root + "data/" + name)
    listed = storage.list_prefix(root + "data/")
    assert [(o.relative, o.size) for o in listed] == [("a.txt", 5), ("b/1.txt", 7), ("b/2.txt", 7)]
    assert [storage.read_bytes(o.uri, 100) for o in listed] == [b"a.txt", b"b/1.txt", b"b/2.txt"]
    assert [o.relative for o in storage.list_prefix(root + "data/", max_keys=2)] == ["a.txt", "b/1.txt"]
    assert storage.list_prefix(root + "data/", max_keys=0) == []


def test_an_s3_listing_is_a_string_prefix_and_skips_folder_markers(bucket, s3_client):
    put(s3_client, bucket, {"data/train/x": b"1", "data/training/y": b"22", "data/folder/": b""})
    listed = storage.list_prefix(f"s3://{bucket}/data/train")
    assert [(o.uri, o.relative) for o in listed] == [
        (f"s3://{bucket}/data/train/x", "x"),
        (f"s3://{bucket}/data/training/y", "training/y"),
    ]
    assert len(storage.list_prefix(f"s3://{bucket}")) == 2


def test_a_prefix_without_its_slash_lands_its_objects_at_the_top(bucket, s3_client, tmp_path):
    # What Session.upload_data returns (s3://bucket/data, no "/"), and SDK v3's sm_drivers
    # channel: the scripts read /opt/ml/input/data/<channel>/<file>.
    put(s3_client, bucket, {"job/input/sm_drivers/sm_train.sh": b"1", "job/input/sm_drivers/s/e.py": b"2"})
    storage.stage_prefix(f"s3://{bucket}/job/input/sm_drivers", tmp_path / "sm_drivers")
    assert files_under(tmp_path / "sm_drivers") == {"sm_train.sh": b"1", "s/e.py": b"2"}


def test_a_missing_directory_lists_as_not_found(tmp_path):
    with pytest.raises(NotFound):
        storage.list_prefix((tmp_path / "nope").as_uri())


# --- stage_prefix: S3 layout ------------------------------------------------------------------


def test_a_directory_prefix_lands_relative_to_itself(bucket, s3_client, tmp_path):
    put(
        s3_client,
        bucket,
        {"data/train/a/x.csv": b"xx", "data/train/y.csv": b"yyy", "data/training/z.csv": b"z"},
    )
    result = storage.stage_prefix(f"s3://{bucket}/data/train/", tmp_path / "train")
    assert files_under(tmp_path / "train") == {"a/x.csv": b"xx", "y.csv": b"yyy"}
    assert result == storage.StageResult(files=2, bytes=5)


def test_a_partial_prefix_keeps_full_base_names(bucket, s3_client, tmp_path):
    # SageMaker's own behaviour (aws/sagemaker-python-sdk#3612), not the SDK local mode's.
    put(
        s3_client,
        bucket,
        {
            "data/train-data.csv": b"1",
            "data/train-ground-truth.csv": b"2",
            "data/train/x.csv": b"3",
            "data/raw-data.txt": b"4",
            "debug/last.log": b"5",
        },
    )
    storage.stage_prefix(f"s3://{bucket}/data/train", tmp_path / "training")
    assert files_under(tmp_path / "training") == {
        "train-data.csv": b"1",
        "train-ground-truth.csv": b"2",
        "x.csv": b"3",  # below the prefix: it continues past a "/"
    }


def test_a_prefix_naming_one_object_gives_its_base_name(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"data/train.csv": b"a,b\n", "data/test.csv": b"no"})
    result = storage.stage_prefix(f"s3://{bucket}/data/train.csv", tmp_path / "c")
    assert files_under(tmp_path / "c") == {"train.csv": b"a,b\n"}
    assert result.files == 1


def test_a_whole_bucket_is_a_prefix(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"top.txt": b"t", "d/e.txt": b"e"})
    storage.stage_prefix(f"s3://{bucket}", tmp_path / "all")
    assert files_under(tmp_path / "all") == {"d/e.txt": b"e", "top.txt": b"t"}


def test_folder_markers_become_empty_directories(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"data/": b"", "data/empty/": b"", "data/x": b"x"})
    result = storage.stage_prefix(f"s3://{bucket}/data/", tmp_path / "c")
    assert (tmp_path / "c" / "empty").is_dir()
    assert result.files == 1


def test_a_prefix_with_only_a_folder_marker_is_an_empty_channel(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"data/": b""})
    assert storage.stage_prefix(f"s3://{bucket}/data/", tmp_path / "c").files == 0
    assert list((tmp_path / "c").iterdir()) == []


# --- stage_prefix: S3 errors ------------------------------------------------------------------


def test_a_prefix_with_no_objects_fails_as_sagemaker_says(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"other/x": b"x"})
    uri = f"s3://{bucket}/data/train/"
    with pytest.raises(ChannelError) as caught:
        storage.stage_prefix(uri, tmp_path / "c", role_arn="arn:aws:iam::111122223333:role/r")
    assert str(caught.value) == (
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that '
        "the bucket exists in the selected region (us-east-1), that objects exist under that S3 "
        'prefix, and that the role "arn:aws:iam::111122223333:role/r" has "s3:ListBucket" '
        f'permissions on bucket "{bucket}".'
    )


def test_a_missing_bucket_fails_the_same_way(s3_env, tmp_path):
    name = f"no-such-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ChannelError, match=f'^No S3 objects found under S3 URL "s3://{name}/d".*"{name}"'):
        storage.stage_prefix(f"s3://{name}/d", tmp_path / "c")


@pytest.mark.parametrize(
    ("key", "sequence"),
    [
        ("data/../../evil", "/../"),
        ("data/a/../../../evil", "/../"),
        ("data//evil", "//"),
        ("data/./evil", "/./"),
        ("data/..", "/../"),
    ],
)
def test_a_hostile_key_is_refused_and_never_lands_outside(bucket, s3_client, tmp_path, key, sequence):
    put(s3_client, bucket, {key: b"pwned"})
    assert s3_client.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"] == key  # kept as is
    dest = tmp_path / "job" / "input" / "data" / "train"
    with pytest.raises(ChannelError) as caught:
        storage.stage_prefix(f"s3://{bucket}/data/", dest)
    assert str(caught.value) == (
        f"Data download failed:Failed to download data. S3 key: s3://{bucket}/{key} has an "
        f"illegal char sub-sequence '{sequence}' in it"
    )
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_key_with_a_leading_slash_is_refused(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"/etc/evil": b"pwned"})
    with pytest.raises(ChannelError, match="illegal char sub-sequence '//'"):
        storage.stage_prefix(f"s3://{bucket}", tmp_path / "c")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_key_that_is_also_a_folder_fails_cleanly(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"data/train": b"file", "data/train/x": b"inside"})
    with pytest.raises(ChannelError, match=r"^Data download failed:Failed to download data"):
        storage.stage_prefix(f"s3://{bucket}/data/", tmp_path / "c")


def test_max_bytes_stops_staging_before_the_disk_fills(bucket, s3_client, tmp_path):
    put(s3_client, bucket, {"d/a": b"x" * 60, "d/b": b"x" * 60})
    assert storage.stage_prefix(f"s3://{bucket}/d/", tmp_path / "ok", max_bytes=120).bytes == 120
    with pytest.raises(ChannelError) as caught:
        storage.stage_prefix(f"s3://{bucket}/d/", tmp_path / "no", max_bytes=100)
    assert str(caught.value) == (
        f"Data download failed:Insufficient disk space. The data under s3://{bucket}/d/ is more "
        "than 100 bytes"
    )
    assert files_under(tmp_path / "no") == {"a": b"x" * 60}  # stopped before the second


def test_a_full_disk_is_a_channel_error(bucket, s3_client, tmp_path, monkeypatch):
    put(s3_client, bucket, {"d/a": b"x"})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "_copy_new_file", disk_full)
    with pytest.raises(ChannelError, match=r"^Data download failed:Insufficient disk space$"):
        storage.stage_prefix(f"s3://{bucket}/d/", tmp_path / "c")


def test_an_object_gone_before_its_download_is_a_channel_error(bucket, s3_client, tmp_path, monkeypatch):
    put(s3_client, bucket, {"d/a": b"x"})
    listed = storage._s3_objects

    def listing_then_delete(loc, uri, client=None):
        for key, length in listed(loc, uri, client):
            s3_client.delete_object(Bucket=bucket, Key=key)
            yield key, length

    monkeypatch.setattr(storage, "_s3_objects", listing_then_delete)
    with pytest.raises(ChannelError) as caught:
        storage.stage_prefix(f"s3://{bucket}/d/", tmp_path / "c")
    assert str(caught.value) == (
        f"Data download failed:Failed to download data. S3 key: s3://{bucket}/d/a: NoSuchKey (404): "
        "The specified key does not exist."
    )


def test_an_unreachable_endpoint_is_not_reported_as_missing_objects(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    no_retries = Config(retries={"mode": "standard", "max_attempts": 0}, connect_timeout=1)
    monkeypatch.setattr(storage, "_s3", lambda credentials=None: aws.client("s3", config=no_retries))
    with pytest.raises(
        ChannelError, match=r"^Data download failed:Failed to download data\. s3://bkt/d/: Could not"
    ):
        storage.stage_prefix("s3://bkt/d/", tmp_path / "c")


def test_safe_relative_allows_ordinary_names():
    assert storage._safe_relative("a/b c/..x/.hidden/x..y", "s3://b/k") == "a/b c/..x/.hidden/x..y"
    assert storage._safe_relative("folder/", "s3://b/k") == "folder"
    assert storage._safe_relative("", "s3://b/k") == ""
    with pytest.raises(ChannelError, match=r"'\\0'"):
        storage._safe_relative("a\x00b", "s3://b/k")


# --- stage_prefix: file:// --------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.csv").write_bytes(b"aaa")
    (src / "sub" / "b.csv").write_bytes(b"bb")
    (src / "sub" / "deeper" / "c.csv").write_bytes(b"c")
    return src


def test_a_file_directory_is_copied_with_hard_links(source, tmp_path):
    dest = tmp_path / "dest"
    result = storage.stage_prefix(source.as_uri(), dest)
    assert files_under(dest) == {"a.csv": b"aaa", "sub/b.csv": b"bb", "sub/deeper/c.csv": b"c"}
    assert (dest / "empty").is_dir()
    assert result == storage.StageResult(files=3, bytes=6)
    assert (dest / "a.csv").stat().st_ino == (source / "a.csv").stat().st_ino


def test_a_file_directory_can_be_copied_without_links(source, tmp_path):
    dest = tmp_path / "dest"
    storage.stage_prefix(source.as_uri() + "/", dest, link=False)
    assert files_under(dest) == files_under(source)
    assert (dest / "a.csv").stat().st_ino != (source / "a.csv").stat().st_ino


def test_a_single_file_lands_under_its_name(source, tmp_path):
    result = storage.stage_prefix((source / "sub" / "b.csv").as_uri(), tmp_path / "dest")
    assert files_under(tmp_path / "dest") == {"b.csv": b"bb"}
    assert result.files == 1


def test_a_missing_path_is_a_channel_error(tmp_path):
    uri = (tmp_path / "nope").as_uri()
    with pytest.raises(
        ChannelError, match="^" + re.escape(f'No files found at "{uri}" given in input data source')
    ):
        storage.stage_prefix(uri, tmp_path / "dest")


def test_a_file_channel_may_not_overlap_its_destination(source):
    with pytest.raises(ChannelError, match="overlaps"):
        storage.stage_prefix(source.as_uri(), source / "sub" / "channel")


def test_symlinks_and_special_files_in_a_file_channel(source, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (source / "link-to-file").symlink_to(source / "a.csv")
    (source / "link-to-dir").symlink_to(outside)
    (source / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(source / "fifo")  # reading it would block forever
    storage.stage_prefix(source.as_uri(), tmp_path / "dest")
    staged = files_under(tmp_path / "dest")
    assert staged["link-to-file"] == b"aaa"
    assert not {"link-to-dir", "dangling", "fifo"} & {Path(name).parts[0] for name in staged}


def test_max_bytes_applies_to_file_channels(source, tmp_path):
    with pytest.raises(ChannelError, match="is more than 5 bytes"):
        storage.stage_prefix(source.as_uri(), tmp_path / "dest", max_bytes=5)


# --- pack_dir ---------------------------------------------------------------------------------


def test_pack_dir_round_trips_with_members_at_the_top_level(source, tmp_path):
    archive = storage.pack_dir(source, tmp_path / "out" / "model.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        assert names == ["a.csv", "empty", "sub", "sub/b.csv", "sub/deeper", "sub/deeper/c.csv"]
        assert all(m.uid == 0 and m.uname == "" for m in tar.getmembers())
        tar.extractall(tmp_path / "x", filter="data")
    assert files_under(tmp_path / "x") == files_under(source)
    assert (tmp_path / "x" / "empty").is_dir()


def test_pack_dir_is_deterministic(source, tmp_path):
    one = storage.pack_dir(source, tmp_path / "1.tar.gz").read_bytes()
    two = storage.pack_dir(source, tmp_path / "2.tar.gz").read_bytes()
    assert one == two


def test_pack_dir_keeps_only_links_that_stay_inside(source, tmp_path):
    (tmp_path / "secret").write_bytes(b"s")
    (source / "out-abs").symlink_to(tmp_path / "secret")
    (source / "out-rel").symlink_to("../secret")
    (source / "to-root").symlink_to(".")
    (source / "sub" / "in-abs").symlink_to(source / "a.csv")
    (source / "in-rel").symlink_to("sub/b.csv")
    os.mkfifo(source / "fifo")
    archive = storage.pack_dir(source, tmp_path / "m.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
        names = set(tar.getnames())
    assert links == {"in-rel": "sub/b.csv", "sub/in-abs": "../a.csv"}
    assert not {"out-abs", "out-rel", "to-root", "fifo"} & names


def test_pack_dir_refuses_a_directory_swapped_for_a_link_out_of_the_job(tmp_path):
    job, elsewhere = tmp_path / "job", tmp_path / "host-secrets"
    (job / "model").mkdir(parents=True)
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "key").write_bytes(b"secret")
    (job / "output").symlink_to(elsewhere)  # what a hostile script can leave behind
    with pytest.raises(StorageError, match="leads outside"):
        storage.pack_dir(job / "output" / "data", tmp_path / "output.tar.gz", inside=job)
    (job / "model" / "m.bin").write_bytes(b"m")
    storage.pack_dir(job / "model", tmp_path / "model.tar.gz", inside=job)


def test_pack_dir_of_a_missing_directory_is_an_empty_archive(tmp_path):
    archive = storage.pack_dir(tmp_path / "missing", tmp_path / "output.tar.gz")
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.getnames() == []


def test_pack_dir_refuses_to_write_inside_what_it_packs(source):
    with pytest.raises(StorageError, match="inside the directory it packs"):
        storage.pack_dir(source, source / "model.tar.gz")


# --- tar members ------------------------------------------------------------------------------


def tar_gz(members: dict[str, bytes | None]) -> bytes:
    """A .tar.gz whose members are files (bytes) or directories (None), in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_it_lists_and_reads_members_of_a_packed_artifact(root, source, tmp_path):
    uri = root + "job/output/model.tar.gz"
    storage.upload_file(storage.pack_dir(source, tmp_path / "m.tar.gz"), uri)
    members = storage.list_tar_members(uri)
    assert [(m.name, m.size, m.is_dir) for m in members] == [
        ("a.csv", 3, False),
        ("empty", 0, True),
        ("sub", 0, True),
        ("sub/b.csv", 2, False),
        ("sub/deeper", 0, True),
        ("sub/deeper/c.csv", 1, False),
    ]
    assert storage.read_tar_member(uri, "sub/deeper/c.csv", max_bytes=10) == b"c"
    assert len(storage.list_tar_members(uri, max_members=2)) == 2


def test_it_reads_dot_slash_members_by_their_plain_names(root):
    uri = root + "output.tar.gz"
    storage.put_bytes(tar_gz({"./": None, "./failure": b"ExecuteUserScriptError: boom"}), uri)
    assert [m.name for m in storage.list_tar_members(uri)] == [".", "failure"]
    assert storage.read_tar_member(uri, "failure", 100) == b"ExecuteUserScriptError: boom"
    assert storage.read_tar_member(uri, "./failure", 100) == b"ExecuteUserScriptError: boom"


def test_member_errors(root):
    uri = root + "output.tar.gz"
    storage.put_bytes(tar_gz({"data": None, "data/big": b"x" * 50}), uri)
    with pytest.raises(NotFound, match="has no member 'failure'"):
        storage.read_tar_member(uri, "failure", 100)
    with pytest.raises(TooLarge, match="more than 49 bytes"):
        storage.read_tar_member(uri, "data/big", 49)
    with pytest.raises(StorageError, match="not a regular file"):
        storage.read_tar_member(uri, "data", 100)
    with pytest.raises(NotFound):
        storage.list_tar_members(root + "missing.tar.gz")


@pytest.mark.parametrize(
    "content",
    [b"plain text, not gzip", gzip.compress(b"gzip, but not a tar " * 40), b"", tar_gz({"a": b"1"})[:30]],
    ids=["not-gzip", "gzip-not-tar", "empty", "truncated"],
)
def test_an_object_that_is_not_a_tar_gz_is_a_clear_error(root, content):
    uri = root + "model.tar.gz"
    storage.put_bytes(content, uri)
    with pytest.raises(StorageError, match=r"is not a readable \.tar\.gz archive"):
        storage.list_tar_members(uri)
    with pytest.raises(StorageError, match=r"is not a readable \.tar\.gz archive"):
        storage.read_tar_member(uri, "a", 10)
