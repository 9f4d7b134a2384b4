"""Where the code comes from (s3://, file://, a path, a directory) and hostile archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.container.support import make_tar_gz, run_container, write_config

HELLO = "import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'ran'), 'w').write('yes')\n"


def train_with(base: Path, source: str, extra_env: dict[str, str] | None = None):
    write_config(base, {"sagemaker_program": "train.py", "sagemaker_submit_directory": source})
    return run_container(base, extra_env=extra_env)


def failure(base: Path) -> str:
    return (base / "output" / "failure").read_text()


def test_it_fetches_a_file_uri_archive(tmp_path: Path) -> None:
    archive = make_tar_gz(tmp_path / "sourcedir.tar.gz", {"train.py": HELLO, "lib/util.py": "X = 1\n"})
    base = tmp_path / "ml"
    result = train_with(base, f"file://{archive}")
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "ran").read_text() == "yes"
    assert (base / "code" / "lib" / "util.py").is_file()


def test_it_fetches_a_plain_path_archive(tmp_path: Path) -> None:
    archive = make_tar_gz(tmp_path / "sourcedir.tar.gz", {"./train.py": HELLO})
    base = tmp_path / "ml"
    assert train_with(base, str(archive)).returncode == 0
    assert (base / "model" / "ran").exists()


def test_an_isolated_job_reads_its_code_from_the_code_channel(tmp_path: Path) -> None:
    # As the SDK sends it with network isolation: the bundle is the channel "code", and the path
    # is /opt/ml's (here under SAGEMAKER_BASE_DIR, where the platform staged the channel).
    base = tmp_path / "ml"
    (base / "input" / "data" / "code").mkdir(parents=True)
    make_tar_gz(base / "input" / "data" / "code" / "sourcedir.tar.gz", {"train.py": HELLO})
    write_config(
        base,
        {
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
        },
        {"code": {}},
    )
    result = run_container(base)
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "ran").read_text() == "yes"


def test_it_copies_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(HELLO)
    base = tmp_path / "ml"
    assert train_with(base, f"file://{src}").returncode == 0
    assert (base / "model" / "ran").exists()


def test_it_fetches_from_s3(tmp_path: Path, s3_client, s3_env: dict[str, str]) -> None:
    s3_client.create_bucket(Bucket="code-bucket")
    archive = make_tar_gz(tmp_path / "sourcedir.tar.gz", {"train.py": HELLO})
    s3_client.upload_file(str(archive), "code-bucket", "job-1/source/sourcedir.tar.gz")
    base = tmp_path / "ml"
    result = train_with(base, "s3://code-bucket/job-1/source/sourcedir.tar.gz", s3_env)
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "ran").exists()
    assert not list(base.glob(".sourcedir-*")), "the downloaded archive is removed"


def test_it_reports_a_missing_s3_object(tmp_path: Path, s3_client, s3_env: dict[str, str]) -> None:
    s3_client.create_bucket(Bucket="empty-bucket")
    base = tmp_path / "ml"
    result = train_with(base, "s3://empty-bucket/nothing.tar.gz", s3_env)
    assert result.returncode == 1
    assert failure(base) == "CodeFetchError: s3://empty-bucket/nothing.tar.gz does not exist"


def test_it_reports_a_missing_bucket(tmp_path: Path, s3_env: dict[str, str]) -> None:
    base = tmp_path / "ml"
    assert train_with(base, "s3://no-such-bucket-xyz/code.tar.gz", s3_env).returncode == 1
    assert failure(base).startswith("CodeFetchError: bucket 'no-such-bucket-xyz'")


def test_code_already_in_the_image_wins(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    (base / "code").mkdir(parents=True)
    (base / "code" / "train.py").write_text(HELLO)
    assert train_with(base, f"file://{tmp_path}/does-not-exist.tar.gz").returncode == 0


def test_it_reports_a_missing_archive(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    assert train_with(base, f"file://{tmp_path}/gone.tar.gz").returncode == 1
    assert failure(base) == f"CodeFetchError: code location file://{tmp_path}/gone.tar.gz does not exist"


def test_it_refuses_an_archive_that_is_not_gzip(tmp_path: Path) -> None:
    (tmp_path / "code.tar.gz").write_text("print('not an archive')\n")
    base = tmp_path / "ml"
    assert train_with(base, str(tmp_path / "code.tar.gz")).returncode == 1
    assert failure(base).endswith("is not a gzip-compressed tar archive (.tar.gz)")


def test_it_refuses_a_truncated_archive(tmp_path: Path) -> None:
    archive = make_tar_gz(tmp_path / "code.tar.gz", {"train.py": HELLO * 200})
    archive.write_bytes(archive.read_bytes()[:60])
    base = tmp_path / "ml"
    assert train_with(base, str(archive)).returncode == 1
    assert "is not a readable .tar.gz archive" in failure(base)


def test_it_refuses_another_scheme(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    assert train_with(base, "https://example.com/code.tar.gz").returncode == 1
    assert failure(base).startswith("CodeFetchError: unsupported code location scheme 'https'")


def hostile(path: Path, build) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(_file("train.py", HELLO), io.BytesIO(HELLO.encode()))
        build(tf)
    return path


def _file(name: str, content: str = "x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(content.encode())
    return info


def _add(tf: tarfile.TarFile, name: str, content: str = "pwned") -> None:
    tf.addfile(_file(name, content), io.BytesIO(content.encode()))


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "dot-dot": (lambda tf: _add(tf, "../../escaped.txt"), "would land outside code/"),
    "dot-dot-inside": (lambda tf: _add(tf, "lib/../../escaped.txt"), "would land outside code/"),
    "absolute": (lambda tf: _add(tf, "/tmp/anyjob-escaped.txt"), "has an absolute path"),
    "symlink-out": (lambda tf: tf.addfile(_link("evil", "../../..")), "points outside code/"),
    "symlink-absolute": (lambda tf: tf.addfile(_link("evil", "/etc/passwd")), "points to absolute path"),
    "hardlink-out": (
        lambda tf: tf.addfile(_link("evil", "../outside.txt", tarfile.LNKTYPE)),
        "points outside code/",
    ),
    "device": (lambda tf: tf.addfile(_device("null")), "is a device file or FIFO"),
    "fifo": (lambda tf: tf.addfile(_link("pipe", "", tarfile.FIFOTYPE)), "is a device file or FIFO"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_it_refuses_hostile_archives(tmp_path: Path, kind: str) -> None:
    build, message = HOSTILE[kind]
    archive = hostile(tmp_path / "evil.tar.gz", build)
    base = tmp_path / "deep" / "ml"
    result = train_with(base, str(archive))
    assert result.returncode == 1
    text = failure(base)
    assert text.startswith("CodeFetchError: ")
    assert message in text
    assert "\n" not in text, "one line a user understands"
    assert not (base / "code" / "train.py").exists(), "nothing is extracted from a refused archive"
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/tmp/anyjob-escaped.txt").exists()


def test_a_link_inside_the_code_is_fine(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        _add(tf, "lib/real.py", "X = 1\n")
        tf.addfile(_link("lib/alias.py", "real.py"))

    base = tmp_path / "ml"
    assert train_with(base, str(hostile(tmp_path / "ok.tar.gz", build))).returncode == 0
    assert (base / "code" / "lib" / "alias.py").read_text() == "X = 1\n"


def test_it_refuses_too_many_members(tmp_path: Path) -> None:
    archive = make_tar_gz(
        tmp_path / "many.tar.gz", {"train.py": HELLO, **{f"f{i}.txt": "x" for i in range(20)}}
    )
    base = tmp_path / "ml"
    assert train_with(base, str(archive), {"ANYJOB_CODE_MAX_MEMBERS": "10"}).returncode == 1
    assert "has more than 10 members; refusing the archive" in failure(base)


def test_it_refuses_an_archive_bomb(tmp_path: Path) -> None:
    archive = make_tar_gz(tmp_path / "bomb.tar.gz", {"train.py": HELLO, "zeros.bin": b"\0" * 5_000_000})
    assert archive.stat().st_size < 50_000
    base = tmp_path / "ml"
    assert train_with(base, str(archive), {"ANYJOB_CODE_MAX_BYTES": "1000000"}).returncode == 1
    assert "unpacks to more than 1000000 bytes; refusing the archive" in failure(base)
    assert not (base / "code" / "zeros.bin").exists()


def test_it_refuses_a_directory_with_a_link_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(HELLO)
    (src / "secrets").symlink_to("/etc")
    base = tmp_path / "ml"
    assert train_with(base, str(src)).returncode == 1
    assert "link secrets points outside the code directory" in failure(base)
