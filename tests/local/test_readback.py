"""What a job leaves in its directory, read back as hostile data: ``readback`` and ``pack_dir``.

Each case builds the hostile tree on the real filesystem (links, FIFOs, sockets, devices, hard
links, a mount) and checks what anyjob reads of it, and that it returns at once. No Django.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest

from jobs import storage
from jobs.backends.local import readback
from jobs.storage import PackLimitExceeded, Skipped, StorageError

ROOT = os.geteuid() == 0


@pytest.fixture
def marker() -> str:
    return f"anyjob-secret-{uuid.uuid4().hex}"


@pytest.fixture
def secret(tmp_path: Path, marker: str) -> Path:
    """A file outside the job directory that a job must never get anyjob to read for it."""
    path = tmp_path / "host" / "secret_key"
    path.parent.mkdir()
    path.write_text(marker)
    path.chmod(0o644)
    return path


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job directory as the executor finds it after the payload ran (``/opt/ml``)."""
    ml = tmp_path / "job" / "ml"
    for sub in ("model", "output/data"):
        (ml / sub).mkdir(parents=True)
    return ml


def make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def make_device(path: Path) -> None:
    """A character device with /dev/null's numbers (needs root, as a hostile root job has)."""
    null = os.stat("/dev/null").st_rdev
    os.mknod(path, stat.S_IFCHR | 0o666, null)


needs_root = pytest.mark.skipif(not ROOT, reason="creating a device node needs root")


# --- readback.read_file -------------------------------------------------------------------------


def test_a_regular_file_is_read(job: Path) -> None:
    (job / "output" / "failure").write_bytes(b"ExecuteUserScriptError: boom")
    assert readback.read_file(job, "output/failure", 1024) == readback.Result(b"ExecuteUserScriptError: boom")


def test_a_file_over_the_bound_is_cut(job: Path) -> None:
    (job / "output" / "failure").write_bytes(b"x" * 5000)
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data == b"x" * 1024 and read.truncated
    (job / "output" / "failure").write_bytes(b"y" * 1024)
    assert readback.read_file(job, "output/failure", 1024) == readback.Result(b"y" * 1024)


def test_a_sparse_file_is_read_only_up_to_the_bound(job: Path) -> None:
    with open(job / "output" / "failure", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB that takes no disk
    read = readback.read_file(job, "output/failure", 64 * 1024)
    assert len(read.data) == 64 * 1024 and read.truncated


def test_a_missing_file_is_none_and_says_so(job: Path) -> None:
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.missing and read.reason == "output/failure does not exist"
    read = readback.read_file(job, "nothing/failure", 1024)
    assert read.data is None and read.missing and read.reason == "nothing does not exist"


def test_a_symlink_leaf_is_not_followed(job: Path, secret: Path, marker: str) -> None:
    (job / "output" / "failure").symlink_to(secret)
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and not read.missing
    assert read.reason == "output/failure is a symbolic link"
    assert marker not in repr(read)


def test_a_relative_symlink_leaf_is_not_followed(job: Path, secret: Path, marker: str) -> None:
    (job / "output" / "failure").symlink_to(os.path.relpath(secret, job / "output"))
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.reason == "output/failure is a symbolic link"


def test_a_symlinked_parent_is_not_followed(job: Path, secret: Path, marker: str) -> None:
    shutil.rmtree(job / "output")
    (job / "output").symlink_to(secret.parent)  # output/failure would be ... nothing; and:
    (secret.parent / "failure").write_text(marker)
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.reason == "output is a symbolic link"
    assert marker not in repr(read)


def test_a_parent_linked_to_the_root_is_not_followed(job: Path) -> None:
    shutil.rmtree(job / "output")
    (job / "output").symlink_to("/")
    assert readback.read_file(job, "output/etc/hostname", 1024).reason == "output is a symbolic link"
    assert readback.read_file(job, "output", 1024).reason == "output is a symbolic link"


def test_a_hard_link_to_a_file_outside_is_not_read(job: Path, secret: Path, marker: str) -> None:
    os.link(secret, job / "output" / "failure")
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and marker not in repr(read)
    assert read.reason == (
        "output/failure is a hard link (one of 2 names of a file that may be outside the directory)"
    )


@pytest.mark.timeout(5)
def test_a_fifo_returns_at_once(job: Path) -> None:
    os.mkfifo(job / "output" / "failure")  # opening it to read would wait for a writer for ever
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.reason == "output/failure is a FIFO"


@pytest.mark.timeout(5)
def test_a_fifo_on_the_way_returns_at_once(job: Path) -> None:
    shutil.rmtree(job / "output")
    os.mkfifo(job / "output")
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.reason == "output is a FIFO"


@pytest.mark.timeout(5)
def test_a_socket_is_refused(job: Path) -> None:
    make_socket(job / "output" / "failure")
    assert readback.read_file(job, "output/failure", 1024).reason == "output/failure is a socket"


@needs_root
@pytest.mark.timeout(5)
def test_a_device_is_refused_without_being_opened(job: Path) -> None:
    make_device(job / "output" / "failure")
    read = readback.read_file(job, "output/failure", 1024)
    assert read.data is None and read.reason == "output/failure is a character device"


def test_a_directory_or_a_file_on_the_way_is_refused(job: Path) -> None:
    (job / "output" / "failure").mkdir()
    assert readback.read_file(job, "output/failure", 1024).reason == "output/failure is a directory"
    (job / "model" / "file").write_text("x")
    assert readback.read_file(job, "model/file/x", 1024).reason == "model/file is a regular file"


def test_another_filesystem_is_refused() -> None:
    # /proc is a mount of its own below /: the st_dev check, with a real mount point.
    read = readback.read_file("/", "proc/version", 1024)
    assert read.data is None and read.reason == "proc is on another filesystem (a mount point)"


def test_paths_that_leave_the_root_are_refused_before_anything_is_opened(job: Path) -> None:
    for bad in ("../secret", "output/../../x", "/etc/passwd", "a\x00b"):
        with pytest.raises(ValueError):
            readback.read_file(job, bad, 10)


def test_a_file_swapped_between_the_look_and_the_open_is_refused(job: Path) -> None:
    (job / "model" / "a").write_text("a")
    (job / "model" / "b").write_text("b")
    looked_at = os.lstat(job / "model" / "b")
    fd = os.open(job / "model", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(readback.Refused, match="changed while anyjob was reading it"):
            readback.open_regular_at(fd, "a", shown_as="model/a", expect=looked_at)
    finally:
        os.close(fd)


def test_names_are_shown_safe_for_a_log_line() -> None:
    assert readback.shown("x\nanyjob: Completed\x1b[2J") == "x\\nanyjob: Completed\\x1b[2J"
    assert readback.shown(os.fsdecode(b"caf\xc3\xa9-\xff")) == "café-\\xff"
    long = readback.shown("a" * 1000, limit=21)
    assert len(long) == 21 and "…" in long


# --- storage.pack_dir ---------------------------------------------------------------------------


def archive_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def hostile_model(job: Path, secret: Path) -> Path:
    """model/ as a hostile script leaves it: a real file, and one of each thing anyjob must not
    pack (made here from outside the sandbox: a hard link to a file outside cannot be made
    from inside it, where /opt/ml is its own mount, but any way it may appear is covered)."""
    model = job / "model"
    (model / "weights.bin").write_bytes(b"w" * 100)
    (model / "sub").mkdir()
    (model / "sub" / "kept.txt").write_text("kept")
    (model / "link-abs").symlink_to(secret)
    (model / "link-rel").symlink_to(os.path.relpath(secret, model))
    (model / "link-dir").symlink_to(secret.parent)
    (model / "sub" / "link-in").symlink_to("kept.txt")  # stays inside: kept, as a link
    os.link(secret, model / "hard-out")  # a hard link to a file outside the job directory
    os.mkfifo(model / "fifo")
    make_socket(model / "sock")
    if ROOT:
        make_device(model / "dev-null")
    os.mkfifo(model / "sub" / "x\nanyjob: forged line")
    return model


@pytest.mark.timeout(10)
def test_pack_dir_leaves_each_hostile_member_out_with_a_note(
    hostile_model: Path, job: Path, tmp_path: Path, marker: str
) -> None:
    skipped: list[Skipped] = []
    archive = storage.pack_dir(hostile_model, tmp_path / "model.tar.gz", inside=job, skipped=skipped)
    found = members(archive)
    assert sorted(found) == ["sub", "sub/kept.txt", "sub/link-in", "weights.bin"]
    assert found["sub/link-in"].issym() and found["sub/link-in"].linkname == "kept.txt"
    assert marker.encode() not in archive_bytes(archive)
    hard = "a hard link (one of 2 names of a file that may be outside the directory)"
    expected = [
        *([Skipped("dev-null", "a character device")] if ROOT else []),
        Skipped("fifo", "a FIFO"),
        Skipped("hard-out", hard),
        Skipped("link-abs", "a symbolic link to outside the directory"),
        Skipped("link-dir", "a symbolic link to outside the directory"),
        Skipped("link-rel", "a symbolic link to outside the directory"),
        Skipped("sock", "a socket"),
        Skipped("sub/x\nanyjob: forged line", "a FIFO"),
    ]
    assert skipped == expected
    assert str(skipped[-1]) == "sub/x\\nanyjob: forged line: a FIFO"  # one log line, escaped


def test_pack_dir_of_a_hostile_tree_is_still_deterministic(
    hostile_model: Path, job: Path, tmp_path: Path
) -> None:
    one = storage.pack_dir(hostile_model, tmp_path / "1.tar.gz", inside=job).read_bytes()
    two = storage.pack_dir(hostile_model, tmp_path / "2.tar.gz", inside=job).read_bytes()
    assert one == two


def test_hard_links_inside_the_directory_are_left_out_too(job: Path, tmp_path: Path) -> None:
    (job / "model" / "a").write_text("shared")
    os.link(job / "model" / "a", job / "model" / "b")
    skipped: list[Skipped] = []
    archive = storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, skipped=skipped)
    assert members(archive) == {}
    assert [s.name for s in skipped] == ["a", "b"]


def test_a_model_dir_swapped_for_a_link_or_a_fifo_is_refused(job: Path, secret: Path, tmp_path: Path) -> None:
    shutil.rmtree(job / "model")
    (job / "model").symlink_to(job / "output")  # even a link that stays inside is not followed
    with pytest.raises(StorageError, match="model is a symbolic link"):
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job)
    (job / "model").unlink()
    os.mkfifo(job / "model")
    with pytest.raises(StorageError, match="model is a FIFO"):
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job)
    assert not (tmp_path / "m.tar.gz").exists()


def test_a_missing_dir_below_the_job_is_an_empty_archive(job: Path, tmp_path: Path) -> None:
    shutil.rmtree(job / "output")
    archive = storage.pack_dir(job / "output" / "data", tmp_path / "o.tar.gz", inside=job)
    assert members(archive) == {}


def test_the_member_bound(job: Path, tmp_path: Path) -> None:
    for i in range(5):
        (job / "model" / f"f{i}").write_text("x")
    storage.pack_dir(job / "model", tmp_path / "ok.tar.gz", inside=job, max_members=5)
    os.mkfifo(job / "model" / "f5")  # skipped entries count: walking them costs too
    with pytest.raises(PackLimitExceeded, match="holds more than 5 files, directories and other entries"):
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, max_members=5)
    assert not (tmp_path / "m.tar.gz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_the_member_bound_counts_nested_entries(job: Path, tmp_path: Path) -> None:
    (job / "model" / "a" / "b").mkdir(parents=True)
    (job / "model" / "a" / "b" / "c").write_text("c")
    storage.pack_dir(job / "model", tmp_path / "ok.tar.gz", inside=job, max_members=3)
    with pytest.raises(PackLimitExceeded) as err:
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, max_members=2)
    assert err.value.detail == "holds more than 2 files, directories and other entries"


def test_the_size_bound(job: Path, tmp_path: Path) -> None:
    (job / "model" / "a").write_bytes(b"a" * 6)
    (job / "model" / "b").write_bytes(b"b" * 4)
    storage.pack_dir(job / "model", tmp_path / "ok.tar.gz", inside=job, max_bytes=10)
    (job / "model" / "c").write_bytes(b"c")
    with pytest.raises(PackLimitExceeded, match="holds more than 10 bytes of files"):
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, max_bytes=10)


@pytest.mark.timeout(5)
def test_a_sparse_file_past_the_size_bound_fails_before_it_is_read(job: Path, tmp_path: Path) -> None:
    with open(job / "model" / "huge", "wb") as f:
        f.truncate(1 << 42)  # 4 TiB of zeros that take no disk: packing them would not end
    with pytest.raises(PackLimitExceeded, match="holds more than 1 GiB of files"):
        storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, max_bytes=1 << 30)


def test_too_deep_a_tree_is_cut_with_a_note(job: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "PACK_MAX_DEPTH", 3)
    deep = job / "model" / "1" / "2" / "3" / "4"
    deep.mkdir(parents=True)
    (deep / "f").write_text("f")
    skipped: list[Skipped] = []
    archive = storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job, skipped=skipped)
    assert sorted(members(archive)) == ["1", "1/2", "1/2/3"]
    assert skipped == [Skipped("1/2/3/4", "a directory nested more than 3 levels deep")]


def test_non_utf8_names_are_packed(job: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")
    (job / "model" / name).write_text("x")
    archive = storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job)
    assert list(members(archive)) == [name]


PACK_IN_A_MOUNT = textwrap.dedent(
    """
    import subprocess, sys
    from jobs import storage
    model, out = sys.argv[1], sys.argv[2]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", model + "/mnt"], check=True)
    open(model + "/mnt/on-the-mount", "w").write("mounted")
    skipped = []
    storage.pack_dir(model, out, skipped=skipped)
    print("\\n".join(str(s) for s in skipped))
    """
)


@pytest.mark.skipif(not ROOT or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_a_mount_point_inside_the_directory_is_left_out(job: Path, tmp_path: Path) -> None:
    # A mount the host can see inside the directory (a job's own mounts live in its sandbox's
    # namespace and never show here): made in a private mount namespace of a child process.
    (job / "model" / "mnt").mkdir()
    (job / "model" / "kept").write_text("kept")
    archive = tmp_path / "m.tar.gz"
    unshare = ["unshare", "--mount", "--propagation", "private"]
    run = subprocess.run(
        [*unshare, sys.executable, "-c", PACK_IN_A_MOUNT, str(job / "model"), str(archive)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    if run.returncode != 0 and "mount" in run.stderr and not archive.exists():
        pytest.skip(f"cannot mount here: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "mnt: on another filesystem (a mount point)"
    assert sorted(members(archive)) == ["kept"]


def test_pack_dir_reads_files_only_through_readback(job: Path, tmp_path: Path, monkeypatch) -> None:
    # Every file opened is opened by name below a directory descriptor, with O_NOFOLLOW.
    (job / "model" / "a").write_text("a")
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        opened.append((os.fspath(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job)
    below = [(p, f) for p, f in opened if "/" not in p]  # names relative to a dir fd
    assert ("a", readback.FILE_FLAGS) in below
    assert all(f & os.O_NOFOLLOW for _, f in below)


def test_tar_members_read_back_equal_the_files(job: Path, tmp_path: Path) -> None:
    (job / "model" / "w").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    archive = storage.pack_dir(job / "model", tmp_path / "m.tar.gz", inside=job)
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile("w")
        assert member is not None
        assert io.BytesIO(member.read()).getvalue() == (job / "model" / "w").read_bytes()
