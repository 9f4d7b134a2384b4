"""Attacks on the local sandbox, each run as a real job or endpoint through the local backend.

Issue #10's attack suite: every test runs hostile code the way a teammate would (a training
job's script, an endpoint's handler) through ``LocalBackend``, and checks *from outside* what
it achieved: marker files on the host, the host's kernel settings, the other job still alive,
connections counted by servers the test runs, the host's free space, the processes that exist.
Inside, each probe records the exact outcome of each attempt (an errno name, or ``ok``) in
``/opt/ml/model/probe.json``, which the test reads back from the job's ``model.tar.gz``.

Read-back attacks (links and FIFOs left in ``model/`` or as ``output/failure``) are in
``test_attacks_readback.py``; the server's AWS variables never reaching a job is
``test_role_credentials.py::test_a_job_sees_its_roles_credentials_and_never_the_servers``
(server keys set in the environment, the job's ``os.environ`` checked) and is not repeated.

Every hostile case is bounded: memory stops at the instance's memory + 1 GiB, forks at 200,
writes at 1.2 GB, every connect has a timeout of a few seconds, every job a short
``MaxRuntimeInSeconds``. Network attempts only ever target this machine's own addresses,
loopback and 169.254.169.254 (which must be refused inside the job's namespace); the one DNS
lookup runs in a job with ``EnableNetworkIsolation``.

Jobs that need to be told something only known once they run (another job's pids, the
executor's pid) wait for a file the test drops into their volume (``/opt/ml/input/<name>``
inside, written from the host side), and jobs the test looks at while they run wait for a
``release`` file the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings as django_settings

from jobs import storage
from jobs.backends.local import endpoint_host, instances, resources, sandbox, validation, volume
from jobs.backends.local.executor import cgroup_name
from jobs.backends.local.launch import endpoint_root
from jobs.backends.local.models import LocalEndpoint, LocalTrainingJob
from tests.local.jobs import training_request, unique, wait_for, wait_for_log

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not sandbox.bwrap_available(),
        reason=f"the sandbox cannot run here, so no job runs at all: {sandbox.isolation_problem()}",
    ),
]

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"
GIB = 1024**3
MIB = 1024**2
#: Executables that run outside the sandbox on anyjob's behalf.
HELPERS = {"bwrap", "setpriv", "unshare", "nsenter", "ip", "pasta", "pasta.avx2", "passt", "passt.avx2"}

# -- the probe every hostile script starts with ------------------------------------------------

PRELUDE = r"""
import ctypes, errno, json, os, signal, socket, subprocess, sys, time

try:  # the test's arguments: a JSON file beside the script (Environment values are short)
    with open(os.path.splitext(os.path.abspath(__file__))[0] + ".json") as fh:
        ARGS = json.load(fh)
except FileNotFoundError:
    ARGS = {}
results = {}
libc = ctypes.CDLL(None, use_errno=True)
EAI = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}


def outcome(exc):
    if isinstance(exc, socket.gaierror):
        return EAI.get(exc.errno, "gaierror %s" % exc.errno)
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def attempt(name, fn, timed=False):
    started = time.monotonic()
    try:
        value = fn()
        results[name] = "ok" if value is None else "ok: " + str(value)[:300]
    except Exception as exc:
        results[name] = outcome(exc)
    if timed:
        results[name + " (seconds)"] = round(time.monotonic() - started, 3)


def check(result):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def wait_file(name, timeout=60):
    path = "/opt/ml/input/" + name
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(path + " never came")
        time.sleep(0.02)
    with open(path) as fh:
        text = fh.read()
    return json.loads(text) if text else None


def read(path):
    with open(path, "rb") as fh:
        return len(fh.read(64))  # how much, never what: nothing of a secret reaches the log


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def connect(target, timeout=3):
    if isinstance(target, str):  # a unix socket: a path, or "@name" for an abstract one
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            if target.startswith("@"):
                s.connect("\0" + target[1:])
            elif len(target.encode()) >= 100:  # too long for sun_path: through the folder
                folder = os.open(os.path.dirname(target), os.O_PATH | os.O_DIRECTORY)
                try:
                    s.connect("/proc/self/fd/%d/%s" % (folder, os.path.basename(target)))
                finally:
                    os.close(folder)
            else:
                s.connect(target)
        finally:
            s.close()
        return None
    host, port = target
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    finally:
        s.close()


def bind(host):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.bind((host, 0))
    finally:
        s.close()


def interfaces():
    with open("/proc/net/dev") as fh:
        return sorted(line.split(":")[0].strip() for line in fh.readlines()[2:])


def save():
    with open("/opt/ml/model/probe.json", "w") as fh:
        json.dump(results, fh)
    print("probed " + json.dumps(results, sort_keys=True), flush=True)
"""


def script(body: str) -> str:
    return PRELUDE + "\n" + textwrap.dedent(body)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    return folder


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def visible_dir(token: str) -> Iterator[Path]:
    """A folder of this machine that the sandbox sees (read-only, as all of the machine's root)
    and that every uid can read: where a library must be for a process of the job's uid
    *outside* the sandbox (bwrap) to load it, were the environment handed to it."""
    path = Path("/var/tmp") / f"anyjob-attack-{token}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hidden_dir(token: str) -> Iterator[Path]:
    """A folder of this machine that does not exist inside the sandbox (``/tmp`` is the job's
    own there), where any uid may append to files the test makes: a process outside the
    sandbox (any uid) can record itself there, nothing inside can.

    Not ``settings.VAR_DIR``: it is 0700, so a process running as the job's uid outside the
    sandbox (bubblewrap itself) could not write there, and the check would be blind to it.
    """
    path = Path(tempfile.gettempdir()) / f"anyjob-attack-{token}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_root(settings, visible_dir: Path) -> Iterator[Path]:
    """``ANYJOB_LOCAL_ROOT`` (jobs' and endpoints' folders) moved out of ``/tmp``, to where the
    machine's root shows read-only inside the sandbox. The tests' ``VAR_DIR`` is under ``/tmp``,
    which is private inside anyway; here what keeps another job's or an endpoint's folder out
    of reach is the sandbox hiding ``ANYJOB_LOCAL_ROOT``, as it must in production."""
    root = visible_dir / "local-sagemaker"
    root.mkdir()
    settings.ANYJOB_LOCAL_ROOT = root
    yield root
    # Before the folder goes: every job and endpoint process started from it has ended (their
    # plan files are below it, on their command lines), so none writes there afterwards.
    deadline = time.monotonic() + 30
    while processes_naming(str(root)) and time.monotonic() < deadline:
        time.sleep(0.1)


def world_writable_file(path: Path) -> Path:
    path.touch()
    path.chmod(0o666)
    return path


def request(name: str, code: Path, program: str, output: Path, **extra: Any) -> dict[str, Any]:
    extra.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 120})  # every attack is bounded
    return training_request(name, code, program, output, **extra)


def start(
    backend,
    code: Path,
    output: Path,
    body: str,
    *,
    prefix: str = "attack",
    name: str | None = None,
    args: Any = None,
    **extra: Any,
) -> str:
    """Create a training job (``name``, or a new one) running ``PRELUDE`` + ``body`` with
    ``ARGS`` = ``args``; returns its name."""
    name = name or unique(prefix)
    (code / f"{name}.py").write_text(script(body))
    if args is not None:
        (code / f"{name}.json").write_text(json.dumps(args))
    backend.create_training_job(request(name, code, f"{name}.py", output, **extra))
    return name


def finished(backend, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(backend, name, timeout=timeout)


def probe_of(job: dict[str, Any]) -> dict[str, Any]:
    data = storage.read_tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "probe.json", 1 << 20)
    return json.loads(data)


def model_member(job: dict[str, Any], member: str) -> bytes:
    return storage.read_tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], member, 1 << 20)


def completed_probe(backend, name: str, timeout: float = 60) -> dict[str, Any]:
    job = finished(backend, name, timeout)
    assert job["TrainingJobStatus"] == "Completed", (job.get("FailureReason"), messages(backend, name)[-20:])
    return probe_of(job)


def messages(backend, name: str) -> list[str]:
    return [e["message"] for e in backend.get_training_logs(name)["events"]]


def host_ml(name: str) -> Path:
    """The job's ``/opt/ml`` on this machine (on its volume)."""
    return Path(django_settings.ANYJOB_LOCAL_ROOT) / name.lower() / "volume" / "ml"


def give(name: str, filename: str, value: Any = "") -> None:
    """Drop ``/opt/ml/input/<filename>`` into a running job (atomically, readable by its uid)."""
    folder = host_ml(name) / "input"
    tmp = folder / f".{filename}.tmp"
    tmp.write_text(value if isinstance(value, str) else json.dumps(value))
    tmp.chmod(0o644)
    tmp.rename(folder / filename)


def executor_pid(name: str) -> int:
    return int(LocalTrainingJob.objects.get(key=name.lower()).executor.rsplit(":", 1)[1])


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in pids():
        children.setdefault(_parent(pid) or 0, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pid_ns(pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def status(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def real_uid(pid: int) -> int | None:
    uids = status(pid, "Uid")
    return int(uids.split()[0]) if uids else None


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return "?"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Sandboxed:
    """A running job's processes as seen from this machine: ``inside`` (its PID namespace)
    and ``outside`` (anyjob's helpers below its executor: bubblewrap as the job's uid)."""

    def __init__(self, name: str) -> None:
        self.executor = executor_pid(name)
        ours = pid_ns()
        below = descendants(self.executor)
        self.inside = [p for p in below if pid_ns(p) not in (ours, None)]
        self.outside = [p for p in below if pid_ns(p) == ours]
        uids = {real_uid(p) for p in self.inside} - {None}
        assert len(uids) == 1, f"one uid for the whole sandbox, not {uids}"
        self.uid: int = uids.pop()
        self.namespace = pid_ns(self.inside[0])


class Listener:
    """A server of this machine that counts every connection it gets (it must get none)."""

    def __init__(self, family: int, address: Any, kind: str = "tcp") -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(16)
        self.accepted: list[Any] = []
        self.address = self.sock.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def own_addresses() -> list[str]:
    """This machine's own non-loopback addresses that can be dialled without a scope
    (link-local ones need an interface index, and fe80::/10 is refused by route anyway)."""
    return [a for a in sandbox.host_addresses() if not a.lower().startswith("fe80:")]


def dialled(seen: dict[str, Any], address: str, *, isolated: bool) -> str:
    """What connecting to this machine's ``address`` from a job's network namespace must give.

    Isolated: no route at all. Otherwise pasta gives the namespace's interface this machine's
    own address (``bind <address>`` succeeded inside), so dialling it reaches the namespace
    itself, where nothing listens; any other address of this machine meets a prohibit route.
    Either way the servers the tests run on this machine count no connection.
    """
    if isolated:
        return "ENETUNREACH"
    return "ECONNREFUSED" if seen[f"bind {address}"] == "ok" else "EACCES"


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- 1. nothing from the request reaches a process outside the sandbox ---------------------------

RECORDER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static void record(const char *path) {
    char exe[512] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n >= 0) exe[n] = 0;
    char line[800];
    int len = snprintf(line, sizeof line, "%s %d %d %s\n", TAG, (int)getpid(), (int)getuid(), exe);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return;
    if (write(fd, line, len) < 0) {}
    close(fd);
}

__attribute__((constructor)) static void anyjob_attack(void) {
    record(HOST_MARKER);
    record("/opt/ml/model/" TAG);
}

#ifdef AUDIT
unsigned int la_version(unsigned int version) { return version; }
#endif
"""


def compile_recorder(source: Path, out: Path, tag: str, marker: Path, *extra: str) -> None:
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(source),
         f'-DTAG="{tag}"', f'-DHOST_MARKER="{marker}"', *extra],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    out.chmod(0o755)


ENV_PROBE = """
marker = ARGS["marker"]
attempt("host marker visible inside", lambda: os.path.exists(marker))
attempt("dlopen by LD_LIBRARY_PATH", lambda: ctypes.CDLL("libanyjobattack.so") and None)
attempt("bash -c true", lambda: subprocess.run(["bash", "-c", "true"], check=True) and None)
results["uid"] = os.getuid()
results["env"] = {k: os.environ.get(k) for k in ARGS["names"]}
print("ready", flush=True)
wait_file("release")
save()
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the preloaded library")
def test_the_requests_environment_reaches_only_the_users_own_processes(
    backend, code, output, visible_dir, hidden_dir, token
) -> None:
    """Attack: LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH, PYTHONPATH and BASH_ENV in the request's
    Environment, each naming code that records the process loading it (pid, uid, executable)
    in a marker file of this machine. Were any of them handed to a process outside the
    sandbox (bubblewrap, setpriv, unshare, pasta, ip, the executor: the hole the issue found),
    that process would run the job's code on the host and leave a line there.

    From outside: the host marker stays empty; while the job runs, every process of this
    machine whose environment or command line holds the request's marker is inside the job's
    PID namespace, and every process of the job's uid outside it (bubblewrap, pasta) has
    exactly the fixed helper environment. And each variable did work for the user's own
    script, as in a SageMaker container: model.tar.gz holds what the payload recorded.
    """
    marker = world_writable_file(hidden_dir / "loaded-outside")
    source = visible_dir / "recorder.c"
    source.write_text(RECORDER_C)
    (visible_dir / "lib").mkdir(mode=0o755)
    (visible_dir / "py").mkdir(mode=0o755)
    compile_recorder(source, visible_dir / "preload.so", "preload", marker)
    compile_recorder(source, visible_dir / "audit.so", "audit", marker, "-DAUDIT")
    compile_recorder(source, visible_dir / "lib" / "libanyjobattack.so", "ldlibpath", marker)
    record_py = (
        "import os\n"
        "for _p in ({marker!r}, '/opt/ml/model/{tag}'):\n"
        "    try:\n"
        "        with open(_p, 'a') as _f:\n"
        "            _exe = os.path.realpath('/proc/self/exe')\n"
        "            _f.write('{tag} %d %d %s\\n' % (os.getpid(), os.getuid(), _exe))\n"
        "    except OSError:\n"
        "        pass\n"
    )
    (visible_dir / "py" / "sitecustomize.py").write_text(
        record_py.format(marker=str(marker), tag="pythonpath")
    )
    (visible_dir / "bash_env.sh").write_text(
        f"for f in {marker} /opt/ml/model/bash_env; do\n"
        '  (echo "bash_env $$ $(id -u) $(readlink /proc/$$/exe)" >> "$f") 2>/dev/null\n'
        "done\n"
    )
    for path in visible_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.suffix == ".so" else 0o644)
    secret = f"anyjob-request-marker-{token}"
    environment = {
        "LD_PRELOAD": str(visible_dir / "preload.so"),
        "LD_AUDIT": str(visible_dir / "audit.so"),
        "LD_LIBRARY_PATH": str(visible_dir / "lib"),
        "PYTHONPATH": str(visible_dir / "py"),
        "BASH_ENV": str(visible_dir / "bash_env.sh"),
        "ANYJOB_REQUEST_MARKER": secret,
    }
    names = sorted(environment)
    name = start(
        backend, code, output, ENV_PROBE, prefix="envjob", Environment=environment,
        args={"marker": str(marker), "names": names},
    )  # fmt: skip
    wait_for_log(backend, name, "ready", timeout=60)

    # While it runs: who on this machine holds the request's values?
    job = Sandboxed(name)
    holders = {}
    for pid in pids():
        env = environ(pid) or {}
        if secret in env.get("ANYJOB_REQUEST_MARKER", "") or secret.encode() in cmdline(pid):
            holders[pid] = (pid_ns(pid), exe_name(pid))
    assert holders, "the payload itself has the request's environment"
    assert {ns for ns, _ in holders.values()} == {job.namespace}, f"outside the sandbox: {holders}"
    outside_as_job = [p for p in pids() if real_uid(p) == job.uid and pid_ns(p) != job.namespace]
    assert {exe_name(p) for p in job.outside} <= {"bwrap"}, job.outside
    assert set(job.outside) <= set(outside_as_job)
    for pid in outside_as_job:  # bubblewrap and pasta
        assert exe_name(pid) in HELPERS, (pid, exe_name(pid))
        assert environ(pid) == sandbox.HELPER_ENV, (exe_name(pid), environ(pid))
    executor_env = environ(job.executor) or {}
    assert not {k: v for k, v in executor_env.items() if secret in v or k in ("LD_PRELOAD", "LD_AUDIT")}
    assert executor_env.get("PYTHONPATH") != environment["PYTHONPATH"]
    give(name, "release")

    done = finished(backend, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    deadline = time.monotonic() + 10  # and nothing of the job's uid stays behind (pasta included)
    while (left := [p for p in pids() if real_uid(p) == job.uid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], [(p, exe_name(p)) for p in left]
    probe = probe_of(done)
    assert marker.read_text() == "", "a process outside the sandbox ran the job's code"
    assert probe["host marker visible inside"] == "ok: False"
    # Exactly as asked, inside (the container puts its requirements' folder before PYTHONPATH).
    inside = dict(probe["env"])
    assert inside.pop("PYTHONPATH").split(":")[-1] == environment["PYTHONPATH"]
    assert inside == {k: v for k, v in environment.items() if k != "PYTHONPATH"}
    assert probe["dlopen by LD_LIBRARY_PATH"] == "ok"
    assert probe["bash -c true"] == "ok"
    uid = probe["uid"]
    assert uid == job.uid and uid not in (0, os.getuid())
    for tag in ("preload", "audit", "ldlibpath", "pythonpath", "bash_env"):
        lines = model_member(done, tag).decode().splitlines()
        assert lines, f"{tag}: the user's script did not get it"
        for line in lines:
            recorded, _pid, line_uid, exe = line.split(" ", 3)
            assert recorded == tag and int(line_uid) == uid, line
            assert os.path.basename(exe) not in HELPERS, line
    # The container's python and the script's python loaded the preloaded library; bash too.
    preloaded = {
        os.path.basename(x.split(" ", 3)[3]) for x in model_member(done, "preload").decode().splitlines()
    }
    assert any(x.startswith("python") for x in preloaded) and "bash" in preloaded, preloaded


# -- 2 and 4. another running job, the executor, root-only files, the server's own state ---------

VICTIM = """
path = "/opt/ml/input/data/train/secret.csv"
write("/opt/ml/model/victim-model", "weights")
results["uid"] = os.getuid()
print("ready", flush=True)
wait_file("release")
attempt("data intact", lambda: open(path).read().strip())
attempt("model intact", lambda: open("/opt/ml/model/victim-model").read())
save()
"""

ATTACKER = """
results["uid"] = os.getuid()
print("ready", flush=True)
T = wait_file("targets.json")
for path in T["reads"]:
    attempt("read " + path, lambda p=path: read(p))
for path in T["lists"]:
    attempt("list " + path, lambda p=path: sorted(os.listdir(p)))
for path in T["sockets"]:
    attempt("connect " + path, lambda p=path: connect(p))
PTRACE_ATTACH = 16
for label, pid in sorted(T["pids"].items()):
    attempt("kill 0 %s" % label, lambda p=pid: os.kill(p, 0))
    attempt("pidfd_open %s" % label, lambda p=pid: os.close(os.pidfd_open(p)))
    attempt("ptrace %s" % label, lambda p=pid: check(libc.ptrace(PTRACE_ATTACH, p, None, None)) and None)
    attempt("environ %s" % label, lambda p=pid: read("/proc/%d/environ" % p))
    attempt("root %s" % label, lambda p=pid: os.listdir("/proc/%d/root/opt/ml" % p))
    attempt("mem %s" % label, lambda p=pid: read("/proc/%d/mem" % p))
    if label not in T["signal_0_only"] and not os.path.exists("/proc/%d" % pid):
        attempt("SIGKILL %s" % label, lambda p=pid: os.kill(p, signal.SIGKILL))
def tids():
    found = set()
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                found.update(int(t) for t in os.listdir("/proc/%s/task" % n))
            except OSError:
                pass
    return found
own = tids()
signalled = []
for pid in range(1, 65536):
    try:
        os.kill(pid, 0)
        signalled.append(pid)
    except ProcessLookupError:
        pass
    except PermissionError:
        signalled.append(-pid)
results["own pids"] = sorted(own | tids())
results["signalled"] = signalled
save()
"""


def test_a_job_cannot_reach_another_job_the_executor_or_the_servers_state(
    backend, code, output, tmp_path, token, local_root
) -> None:
    """Attack, while another job runs: read that job's data and model through their host paths
    (under ``ANYJOB_LOCAL_ROOT``) and through ``/proc/<pid>/root``, its processes' environment
    and memory; signal (0 and SIGKILL), pidfd_open and PTRACE_ATTACH its processes, its
    executor, our own executor and the test process (host pids, found from outside and handed
    in); signal every pid up to 65535; read ``/etc/shadow``, ``settings.VAR_DIR/secret_key``,
    the database, the repository's ``var/secret_key``; connect to the Redis socket.

    From outside: the other job is still alive and finishes with its data intact, the
    executors live, the Redis listener got no connection; the two jobs ran as two different
    uids, neither root nor ours, and the attacker could signal nothing but its own processes.
    """
    channel = tmp_path / "channel"
    channel.mkdir()
    (channel / "secret.csv").write_text(f"victim-secret-{token}\n")
    victim = start(
        backend, code, output, VICTIM, prefix="victim",
        channels={"train": channel.as_uri()},
    )  # fmt: skip
    attacker = start(backend, code, output, ATTACKER, prefix="attacker")
    wait_for_log(backend, victim, "ready")
    wait_for_log(backend, attacker, "ready")
    them, us = Sandboxed(victim), Sandboxed(attacker)
    assert them.uid != us.uid and {them.uid, us.uid}.isdisjoint({0, os.getuid()})

    secret_key = Path(django_settings.VAR_DIR) / "secret_key"
    made_key = not secret_key.exists()
    if made_key:
        secret_key.write_text(f"test-secret-key-{token}\n")
        secret_key.chmod(0o600)
    redis_path = Path(django_settings.ANYJOB_REDIS_SOCKET)
    redis = None
    if not redis_path.exists():
        redis_path.parent.mkdir(parents=True, exist_ok=True)
        redis = Listener(socket.AF_UNIX, str(redis_path))
    try:
        database = str(django_settings.DATABASES["default"]["NAME"])
        victim_ml = host_ml(victim)
        reads = [
            "/etc/shadow",
            str(secret_key),
            database,
            str(victim_ml / "input" / "data" / "train" / "secret.csv"),
            str(victim_ml / "model" / "victim-model"),
        ]
        repo_key = Path(django_settings.BASE_DIR) / "var" / "secret_key"
        if repo_key.exists() and repo_key != secret_key:
            reads.append(str(repo_key))
        [victim_payload] = [p for p in them.inside if f"{victim}.py".encode() in cmdline(p)]  # the script
        targets = {
            "reads": reads,
            "lists": [str(django_settings.VAR_DIR), str(local_root), str(victim_ml)],
            "sockets": [str(redis_path)],
            "pids": {
                "own executor": us.executor,
                "victim executor": them.executor,
                "victim bwrap": them.outside[0],
                "victim payload": victim_payload,
                "test process": os.getpid(),
            },
            "signal_0_only": ["test process"],
        }
        assert min(targets["pids"].values()) > 100, "host pids this low would be the job's own"
        give(attacker, "targets.json", targets)
        seen = completed_probe(backend, attacker)
    except BaseException:
        give(victim, "release")  # a failed attack still lets the other job end at once
        raise
    finally:
        if redis is not None:
            redis.close()
            redis_path.unlink(missing_ok=True)
        if made_key:
            secret_key.unlink(missing_ok=True)

    print(json.dumps(seen, indent=1, sort_keys=True))
    assert seen["read /etc/shadow"] == "EACCES"  # root-only, and the job is not root
    for path in reads[1:]:
        # Hidden (the server's state, the other job); the repository's var/ is hidden only when
        # it is VAR_DIR (not in tests), and its secret_key is root-only either way.
        expected = "EACCES" if path == str(repo_key) else "ENOENT"
        assert seen[f"read {path}"] == expected, path
    assert seen[f"list {django_settings.VAR_DIR}"] == "ok: []"  # hidden: an empty folder
    assert seen[f"list {local_root}"] == "ok: []"
    assert seen[f"list {victim_ml}"] == "ENOENT"
    assert seen[f"connect {redis_path}"] == "ENOENT"
    if redis is not None:
        assert redis.accepted == []
    for label in targets["pids"]:
        for what in ("kill 0", "pidfd_open", "ptrace"):
            assert seen[f"{what} {label}"] == "ESRCH", (what, label)
        for what in ("environ", "root", "mem"):
            assert seen[f"{what} {label}"] == "ENOENT", (what, label)
        if label != "test process":
            assert seen[f"SIGKILL {label}"] == "ESRCH", label
    # It sees and signals only its own PID namespace (its processes and their threads).
    assert set(seen["signalled"]) <= set(seen["own pids"]), "signalled a process it cannot see"
    assert 1 in seen["signalled"] and max(seen["own pids"]) < 50
    assert seen["uid"] == us.uid

    assert all(alive(p) for p in (them.executor, us.executor, victim_payload))
    give(victim, "release")
    kept = completed_probe(backend, victim)
    assert kept["data intact"] == f"ok: victim-secret-{token}" and kept["model intact"] == "ok: weights"
    assert kept["uid"] == them.uid


# -- 3 and 5. host-wide kernel settings, the machine's files, privileges ---------------------------

HOST_WIDE = """
for path, text in ARGS["writes"]:
    attempt("write " + path, lambda p=path, t=text: write(p, t))
for path in ARGS["creates"]:
    attempt("create " + path, lambda p=path: write(p, "x"))
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
attempt("unshare(CLONE_NEWUSER)", lambda: check(libc.unshare(CLONE_NEWUSER)) and None)
attempt("unshare(CLONE_NEWNS)", lambda: check(libc.unshare(CLONE_NEWNS)) and None)
attempt("unshare(CLONE_NEWNET)", lambda: check(libc.unshare(CLONE_NEWNET)) and None)
attempt("mount tmpfs", lambda: check(libc.mount(b"none", b"/opt/ml/code", b"tmpfs", 0, None)) and None)
attempt("setuid(0)", lambda: os.setuid(0))
attempt("chown /opt/ml/model to root", lambda: os.chown("/opt/ml/model", 0, 0))
cmd = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True, timeout=20)
results["unshare -U"] = [cmd.returncode, cmd.stderr.strip()]
with open("/proc/self/status") as fh:
    fields = dict(line.rstrip("\\n").split(":\\t", 1) for line in fh if ":\\t" in line)
for path, text in ARGS["cgroup_writes"]:
    attempt("write " + path, lambda p=path, t=text: write(p, t))
for path in ARGS["cgroup_reads"]:
    attempt("value " + path, lambda p=path: open(p).read().strip())
for key in ("Uid", "Gid", "Groups", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    results[key] = fields.get(key)
results["hostname"] = socket.gethostname()
save()
"""


def test_a_job_cannot_change_the_machine_or_gain_privileges(
    backend, code, output, token, image_python
) -> None:
    """Attack: write host-wide kernel settings (``/proc/sys/kernel/core_pattern`` pointing at a
    program in ``/opt/ml``, ``kernel/hostname``, ``vm/drop_caches``, ``/proc/sysrq-trigger``),
    a file under ``/sys``, ``/etc/passwd``, new files in ``/etc``, ``/usr/local/bin``, the
    repository, the container's package and the image environment every job runs (to poison
    the next job), ``/var/tmp``; create a user namespace (``unshare(CLONE_NEWUSER)`` and
    ``unshare -U``), mount and network namespaces, mount a file system, setuid(0), chown to
    root; leave its cgroups (join a parent's ``cgroup.procs``) or raise their memory and
    process limits. And write where the sandbox has private scratch (``/dev/shm``, ``/run``,
    ``/opt``).

    From outside: core_pattern, hostname, /etc/passwd and the /sys setting are unchanged and
    none of the files exists on this machine (the private scratch included). Inside: every
    attempt on the machine refused with its errno, its cgroup limits still anyjob's; no
    capability in any set, ``NoNewPrivs: 1``, an uid that is neither root nor ours, no
    supplementary group.
    """
    [site_packages] = (image_python.parent.parent / "lib").glob("python*/site-packages")
    container_package = Path(django_settings.BASE_DIR) / "container" / "anyjob_container"
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    hostname = Path("/proc/sys/kernel/hostname").read_text()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    thp_before = thp.read_text() if thp.exists() else None
    thp_value = thp_before.split("[", 1)[1].split("]", 1)[0] if thp_before and "[" in thp_before else "never"
    writes = [
        ["/proc/sys/kernel/core_pattern", "|/opt/ml/code/pwn %p"],
        ["/proc/sys/kernel/hostname", f"pwned-{token}"],
        ["/proc/sys/vm/drop_caches", "1"],
        ["/proc/sysrq-trigger", "h"],  # only "help" were it to go through
        [str(thp), thp_value],  # its current value: harmless were it to go through
        ["/etc/passwd", "pwned::0:0::/:/bin/sh\n"],
    ]
    creates = [
        f"/etc/anyjob-attack-{token}",
        f"/usr/local/bin/anyjob-attack-{token}",
        str(Path(django_settings.BASE_DIR) / f"anyjob-attack-{token}"),
        f"/var/tmp/anyjob-attack-{token}",
        str(site_packages / f"anyjob_attack_{token}.pth"),
        str(container_package / f"anyjob_attack_{token}.py"),
    ]
    private = [
        f"/dev/shm/anyjob-attack-{token}",
        f"/run/anyjob-attack-{token}",
        f"/opt/anyjob-attack-{token}",
    ]
    # Out of its cgroups (which hold it to the instance type): join a parent's, raise its limits.
    name = unique("hostwide")
    cgroup_writes, cgroup_reads = [], []
    support = resources.detect()
    for controller, parent in sorted(support.parents.items()):
        own = parent / cgroup_name(name.lower(), Path(django_settings.ANYJOB_LOCAL_ROOT) / name.lower())
        cgroup_writes.append([str(parent / "cgroup.procs"), "0"])  # "0": the writer itself
        cgroup_writes.append([str(parent.parent / "cgroup.procs"), "0"])
        limit = {
            ("v1", "memory"): "memory.limit_in_bytes",
            ("v2", "memory"): "memory.max",
            ("v1", "pids"): "pids.max",
            ("v2", "pids"): "pids.max",
        }.get((support.mode, controller))
        if limit:
            cgroup_writes.append([str(own / limit), "max" if controller == "pids" else str(1 << 62)])
            cgroup_reads.append(str(own / limit))
    passwd = Path("/etc/passwd").read_bytes()
    sysrq = Path("/proc/sysrq-trigger").exists()  # a kernel without CONFIG_MAGIC_SYSRQ has none
    args = {"writes": writes, "creates": creates + private}
    args |= {"cgroup_writes": cgroup_writes, "cgroup_reads": cgroup_reads}
    start(backend, code, output, HOST_WIDE, name=name, args=args)
    try:
        seen = completed_probe(backend, name)
    finally:
        # What the job left on this machine, seen from outside, before it is cleaned up.
        made_here = [path for path in creates + private if Path(path).exists()]
        # Put back anything the job managed to change (each would also fail the test below).
        if Path("/proc/sys/kernel/core_pattern").read_text() != core_pattern:
            Path("/proc/sys/kernel/core_pattern").write_text(core_pattern)
        if Path("/proc/sys/kernel/hostname").read_text() != hostname:
            Path("/proc/sys/kernel/hostname").write_text(hostname)
        for path in creates + private:
            Path(path).unlink(missing_ok=True)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    assert Path("/proc/sys/kernel/hostname").read_text() == hostname
    assert Path("/etc/passwd").read_bytes() == passwd
    if thp_before is not None:
        assert thp.read_text() == thp_before
    assert made_here == [], "nothing the job created reached this machine"

    print(json.dumps(seen, indent=1, sort_keys=True))
    # /proc/sys is the kernel's own: writable by the machine's root only, and the job is not.
    assert seen["write /proc/sys/kernel/core_pattern"] == "EACCES"
    assert seen["write /proc/sys/kernel/hostname"] == "EACCES"
    assert seen["write /proc/sys/vm/drop_caches"] == "EACCES"
    assert seen["write /proc/sysrq-trigger"] == ("EACCES" if sysrq else "ENOENT")
    if thp_before is not None:
        assert seen[f"write {thp}"] == "EROFS"
    assert seen["write /etc/passwd"] == "EROFS"
    repository = str(Path(django_settings.BASE_DIR) / f"anyjob-attack-{token}")
    for path in creates:
        if path == repository and sandbox.is_private(django_settings.BASE_DIR):
            # A checkout under /tmp (a CI clone): inside, that path is in the job's own /tmp,
            # so creating it works there; made_here above shows it never reached the checkout.
            assert seen[f"create {path}"] in ("ok", "EROFS"), path
            continue
        assert seen[f"create {path}"] == "EROFS", path
    for path in private:  # the sandbox's own tmpfs (charged to its memory), gone with it
        assert seen[f"create {path}"] == "ok", path
    for path, _ in cgroup_writes:
        assert seen[f"write {path}"] == "EROFS", path
    for path in cgroup_reads:  # its limits, as anyjob set them
        memory = str(instances.lookup("ml.m5.large").memory_bytes)
        pids_max = str(django_settings.ANYJOB_LOCAL_MAX_PROCESSES)
        expected = {"pids.max": pids_max, "memory.max": memory, "memory.limit_in_bytes": memory}
        assert seen[f"value {path}"] == f"ok: {expected[Path(path).name]}", path
    assert seen["unshare(CLONE_NEWUSER)"] == "ENOSPC"  # bubblewrap's --disable-userns
    assert seen["unshare -U"][0] != 0 and "No space left on device" in seen["unshare -U"][1]
    assert seen["unshare(CLONE_NEWNS)"] == "EPERM"
    assert seen["unshare(CLONE_NEWNET)"] == "EPERM"
    assert seen["mount tmpfs"] == "EPERM"
    assert seen["setuid(0)"] == "EINVAL"  # root is not even mapped in the job's user namespace
    assert seen["chown /opt/ml/model to root"] == "EINVAL"  # likewise
    zero = "0000000000000000"
    assert [seen[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")] == [zero] * 5
    assert seen["NoNewPrivs"] == "1"
    uid = int(seen["Uid"].split()[0])
    assert seen["Uid"].split() == [str(uid)] * 4 and uid not in (0, os.getuid())
    assert seen["Gid"].split() == [str(uid)] * 4 and seen["Groups"].strip() == ""
    assert seen["hostname"] == "algo-1"


# -- 6. the network, with and without EnableNetworkIsolation ------------------------------------

NETWORK = """
for label, target in ARGS["connects"]:
    attempt("connect " + label, lambda t=target: connect(t if isinstance(t, str) else tuple(t)), timed=True)
if ARGS["isolated"]:
    attempt("dns example.com", lambda: socket.getaddrinfo("example.com", 443), timed=True)
    def udp(address):
        s = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"x", tuple(address))
        finally:
            s.close()
    for label, target in ARGS["connects"]:
        if not isinstance(target, str) and not (target[0].startswith("127.") or target[0] == "::1"):
            attempt("udp " + label, lambda t=target: udp(t), timed=True)
for address in ARGS["addresses"]:
    attempt("bind " + address, lambda a=address: bind(a))  # an address of the job's own?
results["interfaces"] = interfaces()
with open("/proc/net/route") as fh:
    results["ipv4 routes"] = len(fh.readlines()) - 1
save()
"""


@pytest.mark.parametrize("isolated", [False, True], ids=["with-network", "isolated"])
def test_a_job_reaches_nothing_of_this_machine_on_the_network(backend, code, output, token, isolated) -> None:
    """Attack: connect to a server of this machine on 127.0.0.1 (as the dashboard's port is),
    the same server bound on 0.0.0.0 / [::] through each of this machine's own addresses, a
    host abstract unix socket, and the instance metadata address 169.254.169.254:80; with
    ``EnableNetworkIsolation`` also a DNS lookup and UDP to this machine's addresses.

    From outside: no server got a connection. Inside: every attempt failed at once (never a
    timeout): the job's own loopback has nothing listening, this machine's addresses and
    link-local ones are refused by route (EACCES) or unreachable (isolated: ENETUNREACH, only
    ``lo``), the abstract socket does not exist in the job's network namespace.
    """
    if not isolated and sandbox.network_problem():
        pytest.skip(f"jobs get no network here, as with isolation: {sandbox.network_problem()}")
    servers = [Listener(socket.AF_INET, ("0.0.0.0", 0))]
    ipv6 = has_ipv6()
    if ipv6:
        servers.append(Listener(socket.AF_INET6, ("::", 0)))
    abstract = Listener(socket.AF_UNIX, f"\0anyjob-test-{token}")
    servers.append(abstract)
    port4 = servers[0].port
    port6 = servers[1].port if ipv6 else None
    connects = [["loopback", ["127.0.0.1", port4]], ["abstract", f"@anyjob-test-{token}"]]
    connects.append(["metadata", ["169.254.169.254", 80]])
    if ipv6:
        connects.append(["loopback6", ["::1", port6]])
    addresses = own_addresses()
    for address in addresses:
        if ":" in address and ipv6:
            connects.append([address, [address, port6]])
        elif ":" not in address:
            connects.append([address, [address, port4]])
    # The test's own control: the servers answer on this machine.
    for server in servers[:2]:
        host = "::1" if server.sock.family == socket.AF_INET6 else "127.0.0.1"
        socket.create_connection((host, server.port), timeout=2).close()
    probe_abstract = socket.socket(socket.AF_UNIX)
    probe_abstract.connect(f"\0anyjob-test-{token}")
    probe_abstract.close()
    deadline = time.monotonic() + 2
    while sum(len(s.accepted) for s in servers) < len(servers) and time.monotonic() < deadline:
        time.sleep(0.01)
    controls = sum(len(s.accepted) for s in servers)
    assert controls == len(servers)
    try:
        name = start(
            backend, code, output, NETWORK, prefix="net",
            args={"connects": connects, "isolated": isolated, "addresses": addresses},
            EnableNetworkIsolation=isolated,
        )  # fmt: skip
        seen = completed_probe(backend, name)
    finally:
        for server in servers:
            server.close()
    print(json.dumps(seen, indent=1, sort_keys=True))
    assert sum(len(s.accepted) for s in servers) == controls, "a job reached a server of this machine"
    assert seen["connect loopback"] == "ECONNREFUSED"
    assert seen["connect abstract"] == "ECONNREFUSED"
    if ipv6:
        assert seen["connect loopback6"] == "ECONNREFUSED"
    far = "ENETUNREACH" if isolated else "EACCES"  # no route at all, or a prohibit route
    assert seen["connect metadata"] == far
    for address in addresses:
        if f"connect {address}" not in seen:
            continue
        if isolated:
            assert seen[f"bind {address}"] == "EADDRNOTAVAIL"
        else:
            assert seen[f"bind {address}"] in ("ok", "EADDRNOTAVAIL")
        assert seen[f"connect {address}"] == dialled(seen, address, isolated=isolated), address
    for key, value in seen.items():
        if key.endswith("(seconds)"):
            assert value < 1, f"{key}: refused locally, never a timeout"
    if isolated:
        assert seen["interfaces"] == ["lo"] and seen["ipv4 routes"] == 0
        assert seen["dns example.com"] == "EAI_AGAIN"  # no resolver reachable, not "no such name"
        for key, value in seen.items():
            if key.startswith("udp ") and not key.endswith("(seconds)"):
                assert value == "ENETUNREACH", key
    else:
        assert "lo" in seen["interfaces"] and len(seen["interfaces"]) == 2, seen["interfaces"]


# -- 7. memory past the instance type's ------------------------------------------------------------

ALLOCATE = """
limit, step = ARGS["limit"], 256 * 1024 * 1024
chunks, total = [], 0
while total < limit:
    chunks.append(b"\\1" * step)  # filled, so every page is really used
    total += step
    print("allocated %d MiB" % (total >> 20), flush=True)
print("allocated past the instance's memory without being stopped", flush=True)
"""


def smallest_instance_type() -> instances.InstanceType:
    """The type of the table with the least memory that SageMaker accepts for training."""
    from jobs import api_limits

    training = set(api_limits.enum_values("TrainingInstanceType"))
    kinds = [t for t in instances.table().values() if t.name in training]
    return min(kinds, key=lambda t: (t.memory_bytes, t.name))


@pytest.mark.slow  # touching ~4 GiB takes ~8 s on this VM
@pytest.mark.skipif(
    resources.detect().mode == "none",
    reason=f"no cgroup memory controller here, so memory is not held to the instance type: "
    f"{resources.detect().reason}",
)
def test_a_job_past_its_instances_memory_fails_with_sagemakers_reason(backend, code, output) -> None:
    """Attack: on the smallest instance type of the table, allocate (and touch) memory in
    256 MiB chunks up to that type's memory + 1 GiB.

    From outside: the job ends Failed with SageMaker's ``OutOfMemoryError:`` reason naming the
    type and its memory; the log shows it stopped below the type's memory.
    """
    kind = smallest_instance_type()
    name = start(
        backend, code, output, ALLOCATE, prefix="oom",
        args={"limit": kind.memory_bytes + GIB},
        ResourceConfig={"InstanceType": kind.name, "InstanceCount": 1, "VolumeSizeInGB": 1},
    )  # fmt: skip
    job = finished(backend, name, timeout=90)
    assert job["TrainingJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("OutOfMemoryError: Please use an instance type with more memory"), reason
    assert f"{kind.name}'s {kind.memory_gib:g} GiB of memory" in reason
    logged = [m for m in messages(backend, name) if m.startswith("allocated")]
    assert "allocated past the instance's memory without being stopped" not in logged
    if logged:
        assert int(logged[-1].split()[1]) * MIB <= kind.memory_bytes


# -- 8. processes past the limit ----------------------------------------------------------------

FORK = """
r, w = os.pipe()
children, failure = [], None
for _ in range(ARGS["forks"]):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = outcome(exc)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # until the parent closes its end
        os._exit(0)
    children.append(pid)
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
results["forked"] = len(children)
results["failure"] = failure
attempt("a process afterwards", lambda: subprocess.run(["true"], check=True) and None)
save()
"""


def test_a_fork_loop_stops_at_the_process_limit_and_the_job_still_finishes(
    backend, code, output, settings
) -> None:
    """Attack: fork up to 200 children (bounded) with ``ANYJOB_LOCAL_MAX_PROCESSES`` at 40.

    Inside: a fork fails with EAGAIN before the 40th process of the job (the container's own
    processes and threads count too); once the children are gone a new process starts again.
    From outside: the job Completes, and its notes record the limit applied.
    """
    settings.ANYJOB_LOCAL_MAX_PROCESSES = 40
    name = start(backend, code, output, FORK, prefix="forks", args={"forks": 200})
    seen = completed_probe(backend, name)
    print(seen)
    assert seen["failure"] == "EAGAIN"
    assert 0 < seen["forked"] < 40, seen["forked"]
    assert seen["a process afterwards"] == "ok"
    assert any("40 processes" in note for note in backend.job_notes(name)), backend.job_notes(name)


# -- 9. the volume past VolumeSizeInGB ------------------------------------------------------------

FILL = """
def fill(path, limit):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk, written = b"\\1" * (16 * 1024 * 1024), 0
    try:
        while written < limit:
            written += os.write(fd, chunk[: limit - written])
        os.fsync(fd)
        return "ok", written
    except OSError as exc:
        return outcome(exc), written
    finally:
        os.close(fd)

for label, path in (("tmp", "/tmp/filler"), ("model", "/opt/ml/model/filler")):
    print("filling " + label, flush=True)
    results[label] = fill(path, ARGS["limit"])
    print("full %s %s" % (label, results[label]), flush=True)
    wait_file("measured-" + label)
    os.remove(path)
save()
"""


@pytest.mark.skipif(volume.problem() is not None, reason=f"volumes are not enforced here: {volume.problem()}")
def test_writing_past_the_volume_gets_enospc_and_costs_the_machine_no_more(backend, code, output) -> None:
    """Attack: with ``VolumeSizeInGB=1``, write 1.2 GB to ``/tmp``, then (after deleting it)
    1.2 GB to ``/opt/ml/model``.

    Inside: each write stops with ENOSPC ("No space left on device") a little before 1 GiB.
    From outside, at each point of being full: the job's volume file holds at most 1 GiB of
    this machine's disk and the machine's free space fell by no more than that (plus slack
    for whatever else the machine does meanwhile); the job, which catches the error, Completes.
    """
    root = Path(django_settings.ANYJOB_LOCAL_ROOT)
    root.mkdir(parents=True, exist_ok=True)

    def free() -> int:
        st = os.statvfs(root)
        return st.f_bavail * st.f_frsize

    before = free()
    name = start(
        backend, code, output, FILL, prefix="fill", args={"limit": 1_200_000_000},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
    )  # fmt: skip
    image = root / name.lower() / volume.IMAGE
    for label in ("tmp", "model"):
        wait_for_log(backend, name, f"full {label}", timeout=120)
        used, lost = os.stat(image).st_blocks * 512, before - free()
        print(
            f"{label} full: the volume file holds {used / MIB:.0f} MiB, the machine lost {lost / MIB:.0f} MiB"
        )
        assert used <= GIB, f"the volume took {used} bytes of this machine's disk"
        assert lost <= GIB + 256 * MIB, "the machine lost more than the volume's size"
        give(name, f"measured-{label}")
    seen = completed_probe(backend, name, timeout=120)
    print(seen)
    for label in ("tmp", "model"):
        outcome, written = seen[label]
        assert outcome == "ENOSPC", (label, seen[label])
        assert 0.85 * GIB < written <= GIB, (label, written)
    assert not [m for m in messages(backend, name) if "Traceback" in m]


# -- 11. fail closed with bubblewrap made unusable ------------------------------------------------

RAN = """
import os
open(os.environ["ANYJOB_RAN_MARKER"], "w").write("ran")
print("the payload ran", flush=True)
"""


def processes_naming(name: str) -> list[int]:
    """Processes whose command line names the job (its executor's plan file), or a folder."""
    return [pid for pid in pids() if name.lower().encode() in cmdline(pid) and alive(pid)]


def test_with_bubblewrap_unusable_nothing_runs(
    backend, code, output, visible_dir, monkeypatch, token
) -> None:
    """Attack on the fail-closed path: ``ANYJOB_BWRAP`` names a bubblewrap that exits 1 (as
    one refused by a seccomp profile does), then a missing one.

    From outside: ``CreateTrainingJob`` and ``CreateEndpoint`` are refused naming the cause,
    no row, job folder or process exists, the Django check is an error; and the executor
    refuses too when started anyway (the web-side check bypassed, as if bubblewrap broke in
    between): the job fails with the cause, the payload never ran (its marker, which it could
    write only outside the sandbox, is absent) and the fake bubblewrap was only ever probed.
    """
    from django.core import checks

    calls = world_writable_file(visible_dir / "calls")
    fake = visible_dir / "bwrap"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "fake bwrap: refusing" >&2\nexit 1\n')
    fake.chmod(0o755)
    ran = visible_dir / "ran"  # read-only inside the sandbox: only an unsandboxed run writes it
    visible_dir.chmod(0o777)  # so that an unsandboxed payload of any uid could
    (code / "ran.py").write_text(RAN)
    monkeypatch.setenv("ANYJOB_BWRAP", str(fake))
    problem = f"bubblewrap ({fake}) cannot create a sandbox on this machine (fake bwrap: refusing)"
    assert sandbox.isolation_problem() == problem

    def refused(name: str) -> str:
        req = request(name, code, "ran.py", output, Environment={"ANYJOB_RAN_MARKER": str(ran)})
        with pytest.raises(ClientError) as caught:
            backend.create_training_job(req)
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert not LocalTrainingJob.objects.filter(key=name.lower()).exists()
        assert not (Path(django_settings.ANYJOB_LOCAL_ROOT) / name.lower()).exists()
        assert processes_naming(name) == [], "a refused job has a process"
        return caught.value.response["Error"]["Message"]

    name = unique("closed")
    message = refused(name)
    assert problem in message and "ANYJOB_SANDBOX=off" in message
    errors = {m.id: m for m in checks.run_checks() if m.id == "anyjob.E031"}
    assert problem in errors["anyjob.E031"].msg and errors["anyjob.E031"].level == checks.ERROR
    container = {"Image": "anyjob/generic:latest", "Environment": {}}
    backend.create_model({"ModelName": name, "ExecutionRoleArn": ROLE, "PrimaryContainer": container})
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    backend.create_endpoint_config({"EndpointConfigName": name, "ProductionVariants": [variant]})
    with pytest.raises(ClientError) as caught:
        backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})
    assert problem in caught.value.response["Error"]["Message"]
    assert not LocalEndpoint.objects.exists()

    # A missing bubblewrap is refused the same way.
    monkeypatch.setenv("ANYJOB_BWRAP", str(visible_dir / "missing" / "bwrap"))
    assert "bubblewrap (bwrap) is not installed" in refused(unique("closed"))
    monkeypatch.setenv("ANYJOB_BWRAP", str(fake))

    # The executor itself refuses: started with the web side's check out of the way.
    monkeypatch.setattr(validation, "sandbox_refusal", lambda operation: None)
    started = unique("closed")
    backend.create_training_job(
        request(started, code, "ran.py", output, Environment={"ANYJOB_RAN_MARKER": str(ran)})
    )
    job = finished(backend, started)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == f"InternalServerError: the sandbox cannot run on this machine: {problem}"
    assert not ran.exists(), "the payload ran outside the sandbox"
    assert "the payload ran" not in messages(backend, started)
    probed = calls.read_text().splitlines()
    assert len(probed) >= 2 and all(line.endswith("-- true") for line in probed), probed
    deadline = time.monotonic() + 10  # the executor ends once it has recorded the failure
    while processes_naming(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_naming(started) == []


# -- 12. endpoints: reachable only through InvokeEndpoint ------------------------------------------

INSPECT = """\
import json
import os
import socket


def model_fn(model_dir):
    return None


def input_fn(body, content_type, context):
    return body


def predict_fn(data, model):
    out = {"uid": os.getuid()}
    with open("/proc/net/dev") as fh:
        out["interfaces"] = sorted(line.split(":")[0].strip() for line in fh.readlines()[2:])
    for label, host, port in json.loads(os.environ["ATTACK_TARGETS"]):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            s.bind((host, 0))  # is it an address of the endpoint's own namespace?
            out["bind " + host] = "ok"
        except OSError as exc:
            out["bind " + host] = __import__("errno").errorcode.get(exc.errno, type(exc).__name__)
        finally:
            s.close()
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(3)
        try:
            s.connect((host, port))
            out[label] = "ok"
        except OSError as exc:
            out[label] = __import__("errno").errorcode.get(exc.errno, type(exc).__name__)
        finally:
            s.close()
    return out


def output_fn(prediction, accept):
    return json.dumps(prediction).encode(), "application/json"
"""

AS_NOBODY = """
import json, os, socket, sys
out = {}
for label, path in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    try:
        if len(path.encode()) >= 100:  # too long for sun_path: through its folder, as anyjob does
            folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
            path = "/proc/self/fd/%d/%s" % (folder, os.path.basename(path))
        s.connect(path)
        out[label] = "ok"
    except OSError as exc:
        out[label] = __import__("errno").errorcode.get(exc.errno, type(exc).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""


def deploy(backend, name: str, code_uri: str, env: dict[str, str], *, isolated: bool) -> None:
    environment = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": code_uri,
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        **env,
    }
    container = {"Image": "anyjob/generic:latest", "Environment": environment}
    backend.create_model(
        {
            "ModelName": name,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": container,
            "EnableNetworkIsolation": isolated,
        }
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    backend.create_endpoint_config({"EndpointConfigName": name, "ProductionVariants": [variant]})
    backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})


def wait_in_service(backend, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (described := backend.describe_endpoint(name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline, f"{name} still Creating"
        time.sleep(0.05)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")


def connect_as(uid: int | None, targets: list[list[str]], pass_fds: tuple[int, ...] = ()) -> dict[str, str]:
    """Connect to unix sockets from a process of this machine outside any sandbox: as another
    local user (``uid``, no groups), or as root (None: the control)."""
    python = shutil.which("python3", path=sandbox.STANDARD_PATH) or "/usr/bin/python3"
    user = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    out = subprocess.run(
        [*user, python, "-I", "-c", AS_NOBODY, json.dumps(targets)],
        env=sandbox.HELPER_ENV, capture_output=True, text=True, timeout=30, pass_fds=pass_fds, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


ENDPOINT_ATTACKER = """
for label, target in ARGS["connects"]:
    attempt("connect " + label, lambda t=target: connect(t if isinstance(t, str) else tuple(t)), timed=True)
for address in ARGS["addresses"]:
    attempt("bind " + address, lambda a=address: bind(a))
save()
"""


def test_an_endpoint_is_reachable_only_through_invoke_endpoint(
    backend, code, output, tmp_path, token
) -> None:
    """Attack on a deployed endpoint's model server: from two concurrently running jobs (with
    and without network isolation), connect to its unix socket's host path (hidden), to
    ``/run/anyjob/model.sock`` and to TCP 8080 on 127.0.0.1, 0.0.0.0 and this machine's
    addresses; as another local user (uid 65534, outside any sandbox), connect to the socket's
    host path, through a descriptor of the endpoint's folder (past the 0700 folders above),
    and through ``/proc/<server pid>/root``. Also: an endpoint of a model with
    ``EnableNetworkIsolation`` serves but has no network, and neither endpoint reaches this
    machine (a server the test runs, the metadata address).

    From outside: InvokeEndpoint works before and after; every direct way is refused.
    """
    from tests.local.test_endpoints import sourcedir

    server = Listener(socket.AF_INET, ("0.0.0.0", 0))
    addresses = [a for a in own_addresses() if ":" not in a]
    endpoint_targets = [["test server", "127.0.0.1", server.port], ["metadata", "169.254.169.254", 80]]
    endpoint_targets += [[f"test server via {a}", a, server.port] for a in addresses]
    code_uri = sourcedir(tmp_path / "inference", {"inference.py": INSPECT})
    open_name, isolated_name = unique("ep-open"), unique("ep-isolated")
    env = {"ATTACK_TARGETS": json.dumps(endpoint_targets)}
    deploy(backend, open_name, code_uri, env, isolated=False)
    deploy(backend, isolated_name, code_uri, env, isolated=True)
    try:
        wait_in_service(backend, open_name)
        wait_in_service(backend, isolated_name)
        answers = {
            n: json.loads(backend.invoke_endpoint(n, b"probe", content_type="text/plain")["Body"])
            for n in (open_name, isolated_name)
        }
        print(json.dumps(answers, indent=1))
        for n, answer in answers.items():
            assert answer["uid"] not in (0, os.getuid()), n
        assert answers[open_name]["uid"] != answers[isolated_name]["uid"]
        assert answers[isolated_name]["interfaces"] == ["lo"]
        no_network = {isolated_name} | ({open_name} if sandbox.network_problem() else set())
        if open_name not in no_network:  # its own interface from pasta, and loopback
            assert "lo" in answers[open_name]["interfaces"] and len(answers[open_name]["interfaces"]) == 2
        for n in (open_name, isolated_name):
            far = "ENETUNREACH" if n in no_network else "EACCES"
            assert answers[n]["test server"] == "ECONNREFUSED", n
            assert answers[n]["metadata"] == far, n
            for a in addresses:
                expected = dialled(answers[n], a, isolated=n in no_network)
                assert answers[n][f"test server via {a}"] == expected, (n, a)

        row = LocalEndpoint.objects.get(key=open_name.lower())
        host_socket = endpoint_host.socket_path(endpoint_root(row), row.generation)
        assert host_socket.is_socket()
        connects = [
            ["host socket", str(host_socket)],
            ["socket inside", f"{endpoint_host.SOCKET_DIR_INSIDE}/{endpoint_host.SOCKET_NAME}"],
            ["127.0.0.1:8080", ["127.0.0.1", endpoint_host.CONTRACT_PORT]],
            ["0.0.0.0:8080", ["0.0.0.0", endpoint_host.CONTRACT_PORT]],
        ]
        connects += [[f"{a}:8080", [a, endpoint_host.CONTRACT_PORT]] for a in addresses]
        jobs = {}
        for isolated in (False, True):
            jobs[isolated] = start(
                backend, code, output, ENDPOINT_ATTACKER, prefix="ep-attacker",
                args={"connects": connects, "addresses": addresses}, EnableNetworkIsolation=isolated,
            )  # fmt: skip
        # Another local user, outside any sandbox.
        folder = os.open(endpoint_root(row), os.O_PATH | os.O_DIRECTORY)
        try:
            ways = [
                ["host socket", str(host_socket)],
                [
                    "through the endpoint's folder",
                    f"/proc/self/fd/{folder}/{host_socket.parent.name}/model.sock",
                ],
                ["through the server's root", f"/proc/{row.server_pid}/root/run/anyjob/model.sock"],
            ]
            nobody = connect_as(65534, ways, pass_fds=(folder,))
            control = connect_as(None, ways, pass_fds=(folder,))  # root: each way leads to it
        finally:
            os.close(folder)
        seen = {isolated: completed_probe(backend, name) for isolated, name in jobs.items()}
        print(json.dumps({"nobody": nobody, "jobs": seen}, indent=1))
        assert control == dict.fromkeys(control, "ok") and len(control) == 3
        assert nobody == {
            "host socket": "EACCES",
            "through the endpoint's folder": "EACCES",
            "through the server's root": "EACCES",
        }
        for isolated, probe in seen.items():
            assert probe["connect host socket"] == "ENOENT", isolated
            assert probe["connect socket inside"] == "ENOENT", isolated
            assert probe["connect 127.0.0.1:8080"] == "ECONNREFUSED", isolated
            assert probe["connect 0.0.0.0:8080"] == "ECONNREFUSED", isolated
            for a in addresses:
                without = isolated or bool(sandbox.network_problem())
                assert probe[f"connect {a}:8080"] == dialled(probe, a, isolated=without), (isolated, a)
        answer = backend.invoke_endpoint(open_name, b"probe", content_type="text/plain")
        assert json.loads(answer["Body"])["uid"] == answers[open_name]["uid"]
        assert server.accepted == []
    finally:
        server.close()
        for n in (open_name, isolated_name):
            with contextlib.suppress(ClientError):
                backend.delete_endpoint(n)
        deadline = time.monotonic() + 20
        while LocalEndpoint.objects.filter(key__in=[open_name.lower(), isolated_name.lower()]).exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
