"""Where the serving code comes from, and its requirements.txt installed before /ping is 200."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile
from pathlib import Path

from tests.container.serving import serving
from tests.container.support import make_tar_gz

ECHO = "def predict_fn(data, model):\n    return {'echo': data}\n"


def test_it_serves_code_from_an_s3_tar_gz(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="models")
    archive = make_tar_gz(tmp_path / "sourcedir.tar.gz", {"serve_me.py": ECHO})
    s3_client.upload_file(str(archive), "models", "job/source/sourcedir.tar.gz")
    env = {
        "SAGEMAKER_SUBMIT_DIRECTORY": "s3://models/job/source/sourcedir.tar.gz",
        "SAGEMAKER_PROGRAM": "serve_me.py",
    }
    with serving(tmp_path / "ml", env=env) as srv:
        srv.wait_healthy()
        assert srv.invoke("[1]").json() == {"echo": [1]}
        assert (tmp_path / "ml" / "code" / "serve_me.py").read_text() == ECHO


def test_it_reports_code_it_cannot_fetch_on_ping(tmp_path, s3_client):
    s3_client.create_bucket(Bucket="empty")
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://empty/missing/sourcedir.tar.gz"}
    with serving(tmp_path, env=env) as srv:
        ping = srv.wait_ping()
        assert ping.status == 500
        assert ping.json() == {"error": "CodeFetchError: s3://empty/missing/sourcedir.tar.gz does not exist"}
        assert srv.invoke("[1]").status == 500


def test_it_unpacks_a_local_tar_gz_into_code(tmp_path):
    archive = make_tar_gz(tmp_path / "sourcedir.tar.gz", {"inference.py": ECHO})
    with serving(tmp_path / "ml", env={"SAGEMAKER_SUBMIT_DIRECTORY": f"file://{archive}"}) as srv:
        srv.wait_healthy()
        assert srv.invoke("[2]").json() == {"echo": [2]}
        assert (tmp_path / "ml" / "code" / "inference.py").is_file()


def test_it_finds_code_repacked_in_the_model_without_being_told(tmp_path):
    with serving(tmp_path, model={"code/inference.py": ECHO}) as srv:
        srv.wait_healthy()
        assert srv.invoke("[3]").json() == {"echo": [3]}
        assert not any((tmp_path / "code").iterdir())


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel, by hand: the package files and a dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in contents.items())
    contents[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


TINY_USER = "import anyjob_tiny\n\n\ndef predict_fn(data, model):\n    return anyjob_tiny.ANSWER\n"


def test_it_installs_requirements_before_reporting_healthy(tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "anyjob_tiny", "1.0", {"anyjob_tiny/__init__.py": "ANSWER = 42\n"})
    target = tmp_path / "site"
    code = {
        "requirements.txt": f"--no-index\n--find-links {wheels}\nanyjob_tiny==1.0\n",
        "inference.py": TINY_USER,
    }
    with serving(tmp_path / "ml", code=code, env={"ANYJOB_PIP_TARGET": str(target)}) as srv:
        srv.wait_healthy(timeout=60)
        assert srv.invoke("[1]").json() == 42
        assert (target / "anyjob_tiny" / "__init__.py").is_file()
        assert "installing requirements" in srv.log()
    assert importlib.util.find_spec("anyjob_tiny") is None  # the test environment is untouched


def test_it_reports_a_failed_requirements_install_on_ping(tmp_path):
    code = {
        "requirements.txt": f"--no-index\n--find-links {tmp_path}\nanyjob-not-anywhere==9.9\n",
        "inference.py": ECHO,
    }
    with serving(tmp_path / "ml", code=code, env={"ANYJOB_PIP_TARGET": str(tmp_path / "site")}) as srv:
        ping = srv.wait_ping(timeout=60)
        assert ping.status == 500
        message = ping.json()["error"]
        assert message.startswith(
            "InstallRequirementsError: pip install -r requirements.txt failed with exit code 1:"
        )
        assert "anyjob-not-anywhere" in message
        assert srv.invoke("[1]").json() == ping.json()
