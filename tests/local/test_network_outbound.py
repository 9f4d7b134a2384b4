"""A job without network isolation reaches the outside world, and only through its own
namespace: the "outside" here is a test host of our own, a network namespace this test makes
(``ip netns``) behind a veth pair, with a small TCP server in it. Nothing leaves the machine.

The same job cannot reach that server on the host side's own address (an address of this
machine), nor anything with ``EnableNetworkIsolation``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from jobs import storage
from jobs.backends.local import sandbox
from tests.local.jobs import training_request, unique, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to make a test host in a network namespace",
    ),
    pytest.mark.skipif(
        not sandbox.bwrap_available() or sandbox.network_problem() is not None,
        reason=f"no sandbox with network here: {sandbox.isolation_problem() or sandbox.network_problem()}",
    ),
]

SERVER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
s.settimeout(1)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:  # stops by itself
    try:
        c, _ = s.accept()
    except TimeoutError:
        continue
    c.sendall(b"hello from the test host")
    c.close()
"""

PROBE = """
import json, os, socket
results = {}
for label, host in json.loads(os.environ["TARGETS"]).items():
    try:
        with socket.create_connection((host, int(os.environ["PORT"])), timeout=5) as c:
            results[label] = c.recv(100).decode()
    except OSError as exc:
        results[label] = "refused: " + type(exc).__name__
open("/opt/ml/model/probe.json", "w").write(json.dumps(results))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def test_host():
    """A host at 198.18.N.2 (the benchmarking range, in a namespace of ours) serving a line."""
    tag = secrets.token_hex(3)
    netns, host_if, peer_if = f"anyjob-t-{tag}", f"ajt{tag}a", f"ajt{tag}b"
    subnet = int(tag, 16) % 250 + 1
    near, far = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    port = 18080
    _ip("netns", "add", netns)
    server = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", netns)
        _ip("addr", "add", f"{near}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{far}/30", "dev", peer_if)
        _ip("-n", netns, "link", "set", peer_if, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, far, str(port), "90"]
        )
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c",
             f"import socket; socket.create_connection(({far!r}, {port}), timeout=1).close()"],
            capture_output=True,
        ).returncode != 0:  # fmt: skip
            assert time.monotonic() < deadline, "the test host's server did not start"
            time.sleep(0.1)
        yield {"near": near, "far": far, "port": port}
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)


def tar_member(uri: str, name: str) -> bytes:
    return storage.read_tar_member(uri, name, 1 << 20)


@pytest.fixture
def probe_code(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(PROBE)
    code.chmod(0o755)
    return code


def _run(backend, code, output, host, **extra) -> dict[str, str]:
    name = unique("outbound")
    env = {"TARGETS": json.dumps({"far": host["far"], "near": host["near"]}), "PORT": str(host["port"])}
    backend.create_training_job(training_request(name, code, "probe.py", output, Environment=env, **extra))
    job = wait_for(backend, name, timeout=60)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return json.loads(tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "probe.json"))


def test_a_job_reaches_another_host_but_not_this_machine(backend, probe_code, output, test_host) -> None:
    seen = _run(backend, probe_code, output, test_host)
    assert seen["far"] == "hello from the test host", "outbound access through pasta"
    # The host side of the veth is an address of this machine: refused by a prohibit route,
    # at once (EACCES), never reaching the machine's own services.
    assert seen["near"] == "refused: PermissionError"


def test_with_network_isolation_nothing_is_reachable(backend, probe_code, output, test_host) -> None:
    seen = _run(backend, probe_code, output, test_host, EnableNetworkIsolation=True)
    assert seen["far"] == seen["near"] == "refused: OSError"  # ENETUNREACH: loopback only
