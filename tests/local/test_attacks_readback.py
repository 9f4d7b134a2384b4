"""Attacks through what a job leaves behind, run as real jobs through the local backend.

anyjob reads a job's directory back outside the sandbox, with more rights than the job had:
the failure file, and everything it packs into ``model.tar.gz``/``output.tar.gz``. A job that
leaves links, FIFOs, sockets or hard links there must get nothing out of this machine, and
must not hang its job (issue #10, property 7). Each test runs the attack and checks from
outside what it achieved: the secret's marker is nowhere in FailureReason, the log or the
archives, and the job reaches a final state within a bound.

The secret files are the test's own (never the real ``var/secret_key``), with a unique marker.
They are world-readable on purpose: the sandbox is about to run jobs as an unprivileged uid,
and these tests must check anyjob's read-back, not merely file permissions.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from jobs.backends.local.models import LocalTrainingJob
from tests.local.jobs import training_request, unique, wait_for, wait_for_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: Every hostile job must be over within this (they all take a few seconds when they are).
BOUND = 60

SCRIPTS = {
    # output/failure (and entries of model/ and output/data/) made links to the secret.
    "failure_link.py": (
        "import os, sys\n"
        "secret = os.environ['ANYJOB_TEST_SECRET']\n"
        "print('secret visible inside:', os.path.exists(secret), flush=True)\n"
        "for path in ('/opt/ml/output/failure', '/opt/ml/model/secret-link',\n"
        "             '/opt/ml/output/data/secret-link'):\n"
        "    if os.path.lexists(path):\n"
        "        os.remove(path)\n"
        "    os.symlink(secret, path)\n"
        "open('/opt/ml/model/weights.bin', 'w').write('w')\n"
        "print('failure ->', os.readlink('/opt/ml/output/failure'), flush=True)\n"
        "sys.exit(1)\n"
    ),
    # output/ itself made a link to a folder of this machine.
    "output_link.py": (
        "import os, shutil, sys\n"
        "shutil.rmtree('/opt/ml/output')\n"
        "os.symlink(os.environ['ANYJOB_TEST_HOST_DIR'], '/opt/ml/output')\n"
        "print('output ->', os.readlink('/opt/ml/output'), flush=True)\n"
        "sys.exit(1)\n"
    ),
    # FIFOs (which block whoever opens them to read) and a socket where anyjob reads.
    "fifos.py": (
        "import os, socket, sys\n"
        "os.mkfifo('/opt/ml/model/fifo')\n"
        "os.mkfifo('/opt/ml/output/data/fifo')\n"
        "socket.socket(socket.AF_UNIX).bind('/opt/ml/model/sock')\n"
        "if os.path.lexists('/opt/ml/output/failure'):\n"
        "    os.remove('/opt/ml/output/failure')\n"
        "os.mkfifo('/opt/ml/output/failure')\n"
        "open('/opt/ml/model/weights.bin', 'w').write('w')\n"
        "print('left fifos behind', flush=True)\n"
        "sys.exit(1)\n"
    ),
    # A hard link and a symbolic link in model/ to a file outside.
    "links.py": (
        "import errno, os, time\n"
        "secret = os.environ['ANYJOB_TEST_SECRET']\n"
        "try:\n"
        "    os.link(secret, '/opt/ml/model/hard-own')\n"
        "    print('own hard link: made', flush=True)\n"
        "except OSError as exc:\n"
        "    print('own hard link:', errno.errorcode.get(exc.errno, exc.errno), flush=True)\n"
        "os.symlink(secret, '/opt/ml/model/soft')\n"
        "open('/opt/ml/model/weights.bin', 'w').write('w')\n"
        "print('ready', flush=True)\n"
        "deadline = time.time() + 30\n"
        "while not os.path.lexists('/opt/ml/model/hard-planted') and time.time() < deadline:\n"
        "    if os.path.exists('/tmp/nothing-planted'):  # the test could not plant it\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "print('planted:', os.path.lexists('/opt/ml/model/hard-planted'), flush=True)\n"
    ),
    # A sparse file far larger than the job's volume: packing it would not end.
    "sparse.py": (
        "with open('/opt/ml/model/huge', 'wb') as f:\n"
        "    f.truncate(2 * 1024**3)\n"
        "print('sparse file made', flush=True)\n"
    ),
}


@pytest.fixture
def code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    for name, text in SCRIPTS.items():
        (code / name).write_text(text)
    return code


@pytest.fixture
def marker() -> str:
    return f"anyjob-secret-marker-{uuid.uuid4().hex}"


def _secret_file(path: Path, marker: str) -> Path:
    path.write_text(marker + "\n")
    path.chmod(0o644)  # world-readable: the test checks anyjob's read-back, not permissions
    return path


@pytest.fixture
def hidden_secret(marker: str) -> Iterator[Path]:
    """A secret where the server keeps its own (``settings.VAR_DIR``, like ``var/secret_key``
    and the database): hidden inside the sandbox, readable by anyjob's own processes."""
    path = _secret_file(Path(settings.VAR_DIR) / f"anyjob-test-secret-{uuid.uuid4().hex[:8]}", marker)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def visible_secret(marker: str) -> Iterator[Path]:
    """A secret the sandbox can see (the machine's root is read-only inside): a job that
    names it names a file that exists on both sides."""
    path = _secret_file(Path("/etc") / f"anyjob-test-secret-{uuid.uuid4().hex[:8]}", marker)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(params=["hidden", "visible"])
def secret(request) -> Path:
    return request.getfixturevalue(f"{request.param}_secret")


def messages(backend, name: str) -> list[str]:
    return [e["message"] for e in backend.get_training_logs(name)["events"]]


def archives(output: Path, name: str) -> dict[str, bytes]:
    """Every archive the job stored, decompressed (also when its upload then failed)."""
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted((output / name).rglob("*.tar.gz"))}


def members(output: Path, name: str, archive: str) -> list[str]:
    import tarfile

    with tarfile.open(output / name / "output" / archive, "r:gz") as tar:
        return tar.getnames()


def assert_not_leaked(backend, name: str, job: dict, output: Path, marker: str) -> None:
    assert marker not in job.get("FailureReason", "")
    assert not [m for m in messages(backend, name) if marker in m]
    for archive, data in archives(output, name).items():
        assert marker.encode() not in data, f"the secret is in {archive}"


def test_a_failure_file_linked_to_a_secret_shows_nothing_of_it(
    backend, code, output, secret: Path, marker: str, request
) -> None:
    name = unique("failure-link")
    env = {"ANYJOB_TEST_SECRET": str(secret)}
    backend.create_training_job(training_request(name, code, "failure_link.py", output, Environment=env))
    job = wait_for(backend, name, timeout=BOUND)
    assert job["TrainingJobStatus"] == "Failed"
    assert re.fullmatch(r"AlgorithmError: Exit Code: \d+", job["FailureReason"]), job["FailureReason"]
    logged = messages(backend, name)
    # The attack was real: the job named the secret's path (anyjob, reading outside the
    # sandbox, would have found the file there), and could see it when it is visible.
    assert f"failure -> {secret}" in logged
    visible = "visible" in request.node.callspec.id
    assert f"secret visible inside: {visible}" in logged
    assert secret.read_text() == marker + "\n"
    assert "anyjob: the failure file was not read: output/failure is a symbolic link" in logged
    assert "anyjob: skipped model/secret-link: a symbolic link to outside the directory" in logged
    assert "anyjob: skipped output/data/secret-link: a symbolic link to outside the directory" in logged
    assert "weights.bin" in members(output, name, "model.tar.gz")
    assert "secret-link" not in members(output, name, "output.tar.gz")
    assert_not_leaked(backend, name, job, output, marker)


def test_an_output_folder_linked_to_a_host_folder_gives_nothing_of_it(
    backend, code, output, tmp_path: Path, marker: str
) -> None:
    host = Path(settings.VAR_DIR) / f"anyjob-test-host-{uuid.uuid4().hex[:8]}"
    host.mkdir()
    try:
        _secret_file(host / "failure", marker)  # output/failure would be this file
        name = unique("output-link")
        env = {"ANYJOB_TEST_HOST_DIR": str(host)}
        backend.create_training_job(training_request(name, code, "output_link.py", output, Environment=env))
        job = wait_for(backend, name, timeout=BOUND)
        assert job["TrainingJobStatus"] == "Failed"
        assert f"output -> {host}" in messages(backend, name)
        reason = job["FailureReason"]
        assert reason.startswith("ClientError: could not upload the training artifacts: /opt/ml/output/data")
        assert "symbolic link" in reason and str(settings.ANYJOB_LOCAL_ROOT) not in reason
        assert_not_leaked(backend, name, job, output, marker)
        # Nothing was made on this machine through the link (packing used to mkdir output/data).
        assert sorted(p.name for p in host.iterdir()) == ["failure"]
    finally:
        for child in host.iterdir():
            child.unlink()
        host.rmdir()


def test_fifos_and_sockets_left_behind_do_not_hang_the_job(backend, code, output) -> None:
    name = unique("fifos")
    backend.create_training_job(training_request(name, code, "fifos.py", output))
    job = wait_for(backend, name, timeout=BOUND)  # before: Uploading for ever, Stop or not
    assert job["TrainingJobStatus"] == "Failed"
    assert re.fullmatch(r"AlgorithmError: Exit Code: \d+", job["FailureReason"]), job["FailureReason"]
    logged = messages(backend, name)
    assert "left fifos behind" in logged
    assert "anyjob: the failure file was not read: output/failure is a FIFO" in logged
    assert "anyjob: skipped model/fifo: a FIFO" in logged
    assert "anyjob: skipped model/sock: a socket" in logged
    assert "anyjob: skipped output/data/fifo: a FIFO" in logged
    assert members(output, name, "model.tar.gz") == ["weights.bin"]
    assert "fifo" not in members(output, name, "output.tar.gz")
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses[-2:] == ["Uploading", "Failed"]


def test_hard_and_symbolic_links_to_outside_files_are_not_packed(
    backend, code, output, hidden_secret: Path, marker: str
) -> None:
    name = unique("links")
    env = {"ANYJOB_TEST_SECRET": str(hidden_secret)}
    backend.create_training_job(training_request(name, code, "links.py", output, Environment=env))
    wait_for_log(backend, name, "ready", timeout=BOUND)
    # Inside the sandbox /opt/ml is a mount of its own, so link() to a file outside it fails
    # (EXDEV; or the file is hidden): the job reports what it got. A hard link to a file
    # outside can still be there (a sandbox-less run, a channel staged by hard links, ...):
    # the test plants one into the running job's directory, as such a job would have it.
    key = LocalTrainingJob.objects.get(name=name).key
    model = Path(settings.ANYJOB_LOCAL_ROOT) / key / "volume" / "ml" / "model"
    try:
        os.link(hidden_secret, model / "hard-planted")
        planted = True
    except OSError as exc:  # the job's volume is a file system of its own: no link crosses it
        assert exc.errno == errno.EXDEV and os.path.ismount(model.parent.parent), exc
        planted = False
        (model.parent.parent / "tmp" / "nothing-planted").touch()  # the job's /tmp: stop waiting
    job = wait_for(backend, name, timeout=BOUND)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    logged = messages(backend, name)
    assert f"planted: {planted}" in logged
    if planted:
        assert any(m.startswith("anyjob: skipped model/hard-planted: a hard link (one of ") for m in logged)
    assert "anyjob: skipped model/soft: a symbolic link to outside the directory" in logged
    if "own hard link: made" in logged:  # no sandbox here: the job could make one itself
        assert any(m.startswith("anyjob: skipped model/hard-own: a hard link") for m in logged)
    assert members(output, name, "model.tar.gz") == ["weights.bin"]
    assert_not_leaked(backend, name, job, output, marker)


def test_a_sparse_file_past_the_volume_fails_the_job_clearly(backend, code, output) -> None:
    name = unique("sparse")
    backend.create_training_job(training_request(name, code, "sparse.py", output))  # 1 GB volume
    job = wait_for(backend, name, timeout=BOUND)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == (
        "ClientError: could not upload the training artifacts: /opt/ml/model holds more than 1 GiB of files"
    )
