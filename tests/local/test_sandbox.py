"""The sandbox runs the real container's ``train`` as SageMaker runs the image, and contains it.

Every job here is a job directory laid out by hand (``code/`` holds the script, so nothing is
fetched), run with the image environment's python. Paths that must be hidden live outside /tmp, /run
and /opt (under the repository's var/, or /var/tmp when the repository itself is under /tmp,
as a CI clone may be): the sandbox's are private anyway, which would make those checks prove
nothing. What lives in them is visible only if exposed, whatever the repository's place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.backends.local import image, sandbox
from jobs.backends.local.sandbox import Sandbox, SandboxedProcess, SandboxError
from tests.container.support import make_wheel, write_config
from tests.local.conftest import IMAGE_ENV_ROOT, REPO
from tests.servers import alive, wait_for_file

needs_bwrap = pytest.mark.skipif(
    not sandbox.bwrap_available(),
    reason=f"no sandbox on this machine: {sandbox.isolation_problem()} (apt-get install bubblewrap)",
)

GRACEFUL = """
import os, signal, sys, time
def on_term(signum, frame):
    open("/opt/ml/model/saved-on-stop", "w").write("checkpoint")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open("/opt/ml/model/started", "w").close()
while True:
    time.sleep(0.05)
"""

STUBBORN = """
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ignore = 'trap "" TERM; sleep 600'
subprocess.Popen(["sh", "-c", ignore])
subprocess.Popen(["sh", "-c", ignore], start_new_session=True)  # out of the process group
open(os.environ["SM_MODEL_DIR"] + "/started", "w").close()
time.sleep(600)
"""

PROBE = """
import json, os, sys
results = {}
def attempt(name, fn):
    try:
        results[name] = fn()
    except OSError as exc:
        results[name] = f"OSError {exc.errno}"
{body}
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "probe.json"), "w") as fh:
    json.dump(results, fh)
"""


@pytest.fixture(autouse=True)
def sandbox_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says itself when it wants to run without the sandbox."""
    monkeypatch.delenv("ANYJOB_SANDBOX", raising=False)


@pytest.fixture(params=[True, False], ids=["sandbox", "direct"])
def isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run the test once in the sandbox and once without it (ANYJOB_SANDBOX=none)."""
    if request.param and not sandbox.bwrap_available():
        pytest.skip(f"no sandbox on this machine: {sandbox.isolation_problem()}")
    if not request.param:
        monkeypatch.setenv("ANYJOB_SANDBOX", "none")
    return request.param


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """An empty job directory whose path has spaces in it."""
    path = tmp_path / "job dir with spaces"
    path.mkdir()
    return path


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A scratch folder the sandbox does not make private, so only hiding hides it: under the
    repository's ignored var/test-cache/, or /var/tmp if the repository is in a private place."""
    for base in (REPO / "var" / "test-cache", Path("/var/tmp")):
        if sandbox.is_private(base):
            continue
        try:
            base.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix="sandbox-", dir=base)).resolve()
        except OSError:
            continue
        break
    else:
        pytest.skip("no writable folder outside /tmp, /run and /opt for paths to hide")
    path.chmod(0o755)  # reachable by the job's uid, so only hiding hides what is in it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def in_tmp() -> Iterator[Path]:
    """A scratch folder right under the machine's /tmp, which is private inside the sandbox."""
    path = Path(tempfile.mkdtemp(prefix="anyjob-sandbox-", dir="/tmp")).resolve()
    assert sandbox.is_private(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def lay_out(job_dir: Path, script: str, files: dict[str, str] | None = None) -> None:
    """A job whose code is already in ``code/`` (as if baked into the image)."""
    write_config(job_dir, {"sagemaker_program": "train.py"})
    code = job_dir / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text(textwrap.dedent(script))
    for name, content in (files or {}).items():
        (code / name).write_text(content)


def probe(body: str) -> str:
    return PROBE.replace("{body}", textwrap.dedent(body))


def train_spec(job_dir: Path, python: Path, **overrides) -> Sandbox:
    """As the executor builds it: the image env hidden with the rest of var/, then exposed."""
    fields = {
        "job_dir": job_dir,
        "argv": [str(python), "-m", "anyjob_container", "train"],
        "env": {**image.IMAGE_ENV, "ANYJOB_STOP_GRACE_SECONDS": "2"},
        "network": False,
        "hide": [IMAGE_ENV_ROOT],
        "expose_ro": image.runtime_paths(python),
    }
    fields.update(overrides)
    return Sandbox(**fields)


def run(spec: Sandbox, timeout: float = 60) -> tuple[SandboxedProcess, str]:
    """Run to the end; returns the handle and the output (stdout and stderr)."""
    log = Path(spec.job_dir).parent / f"log-{uuid.uuid4().hex[:8]}.txt"
    with open(log, "wb") as out:
        proc = SandboxedProcess.start(spec, stdout=out, stderr=subprocess.STDOUT)
    if proc.wait(timeout) is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"the job ran over {timeout} s:\n{log.read_text()}")
    return proc, log.read_text(errors="replace")


def all_dead(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "model" / "probe.json").read_text())


# -- inside the sandbox ------------------------------------------------------------------------


@needs_bwrap
def test_a_script_that_hard_codes_opt_ml_saves_its_model_into_the_job_directory(
    job_dir: Path, image_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYJOB_TEST_HOST_ONLY", "must not leak")
    lay_out(
        job_dir,
        """
        import json, os
        with open("/opt/ml/model/model.json", "w") as fh:
            json.dump({"cwd": os.getcwd(), "env": dict(os.environ)}, fh)
        print("first line")
        """,
    )
    spec = train_spec(job_dir, image_python, env={**image.IMAGE_ENV, "MY_SETTING": "on"})
    proc, out = run(spec)
    assert proc.returncode == 0, out
    assert proc.isolated and proc.note is None
    assert "first line" in out
    saved = json.loads((job_dir / "model" / "model.json").read_text())
    assert (job_dir / "output" / "success").exists()
    env = saved["env"]
    assert env["SAGEMAKER_BASE_DIR"] == "/opt/ml" and env["SM_MODEL_DIR"] == "/opt/ml/model"
    assert env["MY_SETTING"] == "on" and env["HOME"] == "/tmp" and env["LANG"] == "C.UTF-8"
    assert env["ANYJOB_PIP_TARGET"] == "/tmp/anyjob-site"
    assert "ANYJOB_TEST_HOST_ONLY" not in env
    assert saved["cwd"] == "/opt/ml/code"


@needs_bwrap
def test_tmp_is_private_and_the_root_is_read_only(job_dir: Path, image_python: Path) -> None:
    marker = f"/tmp/anyjob-sandbox-{uuid.uuid4().hex}"
    repo_file = REPO / f"anyjob-sandbox-{uuid.uuid4().hex}"
    container_file = image.CONTAINER_DIR / f"anyjob-sandbox-{uuid.uuid4().hex}"  # exposed
    lay_out(
        job_dir,
        probe(
            f"""
            attempt("tmp", lambda: open({marker!r}, "w").write("inside"))
            attempt("etc", lambda: open("/etc/anyjob-sandbox-probe", "w").write("x"))
            attempt("repo", lambda: open({str(repo_file)!r}, "w").write("x"))
            attempt("container", lambda: open({str(container_file)!r}, "w").write("x"))
            attempt("read", lambda: open("/etc/os-release").read()[:4])
            caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0]
            results["caps"] = caps.split()[1]
            results["sid_is_own"] = os.getsid(0) != os.getsid(1)
            """
        ),
    )
    proc, out = run(train_spec(job_dir, image_python))
    assert proc.returncode == 0, out
    found = results(job_dir)
    assert found["tmp"] == len("inside") and not Path(marker).exists()
    assert found["etc"] == found["container"] == "OSError 30"  # EROFS
    if not sandbox.is_private(REPO):  # else the repository is not there: only what is exposed
        assert found["repo"] == "OSError 30"
    assert not repo_file.exists() and not container_file.exists()
    assert found["read"] == "PRET"  # the machine's files are readable, as an image's are
    assert int(found["caps"], 16) == 0, "no capabilities: nothing can be remounted"


@needs_bwrap
def test_hidden_paths_look_empty_and_their_unix_sockets_are_unreachable(
    image_python: Path, outside_tmp: Path
) -> None:
    var = outside_tmp / "var"
    other = var / "local" / "other-job" / "ml" / "model"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("another team's model")
    (var / "anyjob.sqlite3").write_bytes(b"SQLite format 3\0")
    store = var / "store" / "team"
    store.mkdir(parents=True)
    (store / "sourcedir.tar.gz").write_text("this job's code")  # exposed, as file:// code is
    (store / "other-sourcedir.tar.gz").write_text("someone else's code")
    lone = outside_tmp / "credentials"
    lone.write_text("aws_secret_access_key=hunter2")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(var / "redis.sock"))
    server.listen()
    job_dir = var / "local" / "this-job" / "ml"  # as the executor lays it out: inside var/
    job_dir.mkdir(parents=True)
    lay_out(
        job_dir,
        probe(
            f"""
            import socket
            var = {str(var)!r}
            attempt("list", lambda: sorted(os.listdir(var)))
            attempt("own", lambda: os.path.exists(var + "/local/this-job/ml/input/config"))
            attempt("secret", lambda: open(var + "/local/other-job/ml/model/secret.txt").read())
            attempt("db", lambda: open(var + "/anyjob.sqlite3", "rb").read().decode())
            attempt("lone", lambda: open({str(lone)!r}).read())
            attempt("store", lambda: sorted(os.listdir({str(store)!r})))
            attempt("code", lambda: open({str(store / "sourcedir.tar.gz")!r}).read())
            attempt("redis", lambda: socket.socket(socket.AF_UNIX).connect(var + "/redis.sock"))
            """
        ),
    )
    # The control run: with every folder open to everyone and nothing hidden, everything is
    # there to take (the job's own uid is then no obstacle): only hiding stands in the way.
    for folder in [var, *var.parents]:
        if folder == Path("/") or not str(folder).startswith(str(outside_tmp.parent)):
            break
        folder.chmod(folder.stat().st_mode | 0o005)
    for path in var.rglob("*"):
        path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    lone.chmod(0o644)
    try:
        proc, out = run(train_spec(job_dir, image_python, network=True))
        assert proc.returncode == 0, out
        seen = results(job_dir)
        assert seen["own"] is True
        assert seen["secret"] == "another team's model" and seen["lone"].startswith("aws_")
        assert seen["redis"] == "OSError 13", "a socket another uid made: not ours to connect to"
        spec = train_spec(job_dir, image_python, network=True, hide=[var, lone, IMAGE_ENV_ROOT])
        spec = dataclasses.replace(spec, expose_ro=[*spec.expose_ro, store / "sourcedir.tar.gz"])
        proc, out = run(spec)
    finally:
        server.close()
    assert proc.returncode == 0, out
    hidden = results(job_dir)
    assert hidden["list"] == ["store"], "only the way to what is exposed"
    assert hidden["own"] is False, "even the job's own host path is hidden (it is /opt/ml)"
    assert hidden["secret"] == hidden["db"] == "OSError 2"  # ENOENT
    assert hidden["lone"] == "OSError 13"  # EACCES: /dev/null on a nodev mount
    assert hidden["redis"] == "OSError 2"  # and, hidden, not even there
    assert hidden["store"] == ["sourcedir.tar.gz"] and hidden["code"] == "this job's code"


@needs_bwrap
def test_what_is_exposed_from_the_private_tmp_shows_read_only_and_nothing_else_there_does(
    job_dir: Path, image_python: Path, in_tmp: Path
) -> None:
    exposed = in_tmp / "store"
    exposed.mkdir()
    (exposed / "sourcedir.tar.gz").write_text("this job's code")
    (in_tmp / "other-sourcedir.tar.gz").write_text("someone else's code")
    lay_out(
        job_dir,
        probe(
            f"""
            attempt("list", lambda: sorted(os.listdir({str(in_tmp)!r})))
            attempt("code", lambda: open({str(exposed / "sourcedir.tar.gz")!r}).read())
            attempt("write", lambda: open({str(exposed / "new")!r}, "w").write("x"))
            attempt("other", lambda: open({str(in_tmp / "other-sourcedir.tar.gz")!r}).read())
            """
        ),
    )
    spec = train_spec(job_dir, image_python)
    proc, out = run(dataclasses.replace(spec, expose_ro=[*spec.expose_ro, exposed]))
    assert proc.returncode == 0, out
    found = results(job_dir)
    assert found["list"] == ["store"] and found["code"] == "this job's code"
    assert found["write"] == "OSError 30" and not (exposed / "new").exists()
    assert found["other"] == "OSError 2"


@needs_bwrap
def test_the_image_env_still_runs_with_the_home_directory_hidden(job_dir: Path, image_python: Path) -> None:
    # Home directories hold credentials; pyenv-style interpreters live there too.
    home = Path.home().resolve()
    lay_out(job_dir, probe(f"attempt('home', lambda: sorted(os.listdir({str(home)!r})))"))
    spec = train_spec(job_dir, image_python, hide=[home, IMAGE_ENV_ROOT])
    proc, out = run(spec)
    assert proc.returncode == 0, out
    exposed_inside_home = {
        p.relative_to(home).parts[0] for p in image.runtime_paths(image_python) if home in p.parents
    }
    assert set(results(job_dir)["home"]) == exposed_inside_home


@needs_bwrap
@pytest.mark.parametrize("network", [False, True])
def test_the_machines_loopback_is_out_of_reach_with_and_without_isolation(
    job_dir: Path, image_python: Path, network: bool
) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    lay_out(
        job_dir,
        probe(
            f"""
            import socket
            attempt("connect", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=5).close())
            """
        ),
    )
    try:
        proc, out = run(train_spec(job_dir, image_python, network=network))
    finally:
        server.close()
    assert proc.returncode == 0, out
    # ECONNREFUSED: the job's own loopback, where nothing listens (pasta maps none of ours)
    assert results(job_dir)["connect"] == "OSError 111"


@needs_bwrap
def test_terminate_reaches_the_user_scripts_handler_through_the_container(
    job_dir: Path, image_python: Path
) -> None:
    lay_out(job_dir, GRACEFUL)
    proc = SandboxedProcess.start(train_spec(job_dir, image_python), stdout=subprocess.PIPE)
    with proc:
        wait_for_file(job_dir / "model" / "started")
        payload = proc.payload_pid()
        assert payload is not None and payload != proc.pid
        assert "anyjob_container" in Path(f"/proc/{payload}/cmdline").read_text()
        assert os.getsid(payload) != os.getsid(0), "a new session: no TIOCSTI into our terminal"
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        out = proc.stdout.read().decode()
    assert (job_dir / "model" / "saved-on-stop").read_text() == "checkpoint"
    assert (job_dir / "output" / "success").exists()
    assert "anyjob: training finished successfully" in out


@needs_bwrap
def test_kill_leaves_no_process_of_the_sandbox_alive(job_dir: Path, image_python: Path) -> None:
    lay_out(job_dir, STUBBORN)
    proc = SandboxedProcess.start(train_spec(job_dir, image_python), stdout=subprocess.DEVNULL)
    with proc:
        wait_for_file(job_dir / "model" / "started")
        time.sleep(0.2)
        pids = proc.pids()
        # bwrap's init, the container, the script, two shells and two sleeps
        assert len(pids) >= 5, pids
        proc.kill()
        assert proc.wait(timeout=10) == 128 + signal.SIGKILL
        # Nothing to wait for: when wait() returns, the kernel has emptied the namespace.
        assert proc.pids() == []
        assert not any(alive(pid) for pid in pids)


@needs_bwrap
def test_killing_bwrap_itself_kills_the_whole_namespace(job_dir: Path, image_python: Path) -> None:
    lay_out(job_dir, STUBBORN)
    with SandboxedProcess.start(train_spec(job_dir, image_python), stdout=subprocess.DEVNULL) as proc:
        wait_for_file(job_dir / "model" / "started")
        time.sleep(0.2)
        pids = proc.pids()
        os.kill(proc.pid, signal.SIGKILL)
        assert all_dead(pids)


@needs_bwrap
def test_a_sandbox_started_from_a_thread_outlives_that_thread(job_dir: Path, image_python: Path) -> None:
    # The parent-death signal follows the thread that forked; the module forks from its own.
    lay_out(job_dir, GRACEFUL)
    started: list[SandboxedProcess] = []
    thread = threading.Thread(
        target=lambda: started.append(SandboxedProcess.start(train_spec(job_dir, image_python)))
    )
    thread.start()
    thread.join()
    with started[0] as proc:
        wait_for_file(job_dir / "model" / "started")
        time.sleep(0.3)
        assert proc.poll() is None


@needs_bwrap
def test_the_sandbox_dies_with_the_process_that_started_it(job_dir: Path, image_python: Path) -> None:
    lay_out(job_dir, GRACEFUL)
    spec = train_spec(job_dir, image_python)
    parent_code = textwrap.dedent(
        """
        import json, subprocess, sys, time
        from pathlib import Path
        from jobs.backends.local.sandbox import Sandbox, SandboxedProcess
        spec = json.loads(sys.argv[1])
        spec = Sandbox(Path(spec["job_dir"]), spec["argv"], spec["env"],
                       hide=[Path(p) for p in spec["hide"]], expose_ro=[Path(p) for p in spec["expose_ro"]])
        proc = SandboxedProcess.start(spec, stdout=subprocess.DEVNULL)
        while not Path(spec.job_dir, "model", "started").exists():
            time.sleep(0.02)
        print(json.dumps([proc.pid, *proc.pids()]), flush=True)
        time.sleep(600)
        """
    )
    as_json = {
        "job_dir": str(spec.job_dir),
        "argv": spec.argv,
        "env": spec.env,
        "hide": [str(p) for p in spec.hide],
        "expose_ro": [str(p) for p in spec.expose_ro],
    }
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code, json.dumps(as_json)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        pids = json.loads(parent.stdout.readline())
        assert len(pids) >= 4 and all(alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    assert all_dead(pids)
    assert not (job_dir / "model" / "saved-on-stop").exists(), "killed, not stopped"


def test_requirements_install_into_a_writable_place(
    job_dir: Path, image_python: Path, isolated: bool
) -> None:
    make_wheel(job_dir / "code" / "wheels", "anyjob_probe_pkg", "1.0", "VALUE = 'from the wheel'\n")
    lay_out(
        job_dir,
        """
        import os, anyjob_probe_pkg
        open(os.environ["SM_MODEL_DIR"] + "/value", "w").write(anyjob_probe_pkg.VALUE)
        open(os.environ["SM_MODEL_DIR"] + "/where", "w").write(anyjob_probe_pkg.__file__)
        """,
        files={"requirements.txt": "--no-index\n--find-links ./wheels\nanyjob_probe_pkg==1.0\n"},
    )
    proc, out = run(train_spec(job_dir, image_python))
    assert proc.returncode == 0, out
    assert proc.isolated is isolated
    assert (job_dir / "model" / "value").read_text() == "from the wheel"
    where = (job_dir / "model" / "where").read_text()
    if isolated:
        assert where.startswith("/tmp/anyjob-site/")
    else:
        assert where.startswith(str(job_dir / ".anyjob-tmp" / "anyjob-site"))
        assert not (job_dir / ".anyjob-tmp").exists(), "the scratch folder goes with the job"


def test_no_descriptor_of_ours_leaks_into_the_job(job_dir: Path, image_python: Path, isolated: bool) -> None:
    leak = os.open(job_dir.parent, os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        listing = "import os; print(sorted(os.listdir('/proc/self/fd'), key=int))"
        spec = Sandbox(
            job_dir, [str(image_python), "-c", listing], expose_ro=image.runtime_paths(image_python)
        )
        proc, out = run(spec)
    finally:
        os.close(leak)
    assert proc.returncode == 0, out
    assert out.strip() == "['0', '1', '2', '3']"  # 3 is listdir's own


# -- without the sandbox -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["off", "none"])
def test_anyjob_sandbox_off_runs_the_same_job_without_isolation(
    job_dir: Path, image_python: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", value)
    lay_out(
        job_dir,
        """
        import os
        open(os.environ["SM_MODEL_DIR"] + "/model.txt", "w").write(os.environ["SAGEMAKER_BASE_DIR"])
        """,
    )
    proc, out = run(train_spec(job_dir, image_python))
    assert proc.returncode == 0, out
    assert not proc.isolated
    assert proc.note == "ran without isolation: the sandbox is turned off (ANYJOB_SANDBOX=off)"
    assert (job_dir / "model" / "model.txt").read_text() == str(job_dir)


def test_without_bwrap_nothing_runs_at_all(
    job_dir: Path, image_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)  # as on a machine without it
    assert sandbox.isolation_problem() == "bubblewrap (bwrap) is not installed"
    assert not sandbox.bwrap_available()
    lay_out(job_dir, "open('/opt/ml/model/ran', 'w').write('yes')\n")
    with pytest.raises(SandboxError, match="the sandbox cannot run on this machine: bubblewrap"):
        SandboxedProcess.start(train_spec(job_dir, image_python))
    assert not (job_dir / "model" / "ran").exists(), "fails closed: the command never ran"


def test_a_bad_anyjob_sandbox_value_is_refused(job_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", "docker")
    with pytest.raises(SandboxError, match="ANYJOB_SANDBOX must be on or off, not 'docker'"):
        SandboxedProcess.start(Sandbox(job_dir, ["true"]))


def test_without_isolation_kill_still_gets_every_child(
    job_dir: Path, image_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", "off")
    lay_out(job_dir, STUBBORN)
    with SandboxedProcess.start(train_spec(job_dir, image_python), stdout=subprocess.DEVNULL) as proc:
        wait_for_file(job_dir / "model" / "started")
        time.sleep(0.2)
        pids = proc.pids()
        assert len(pids) >= 4, pids
        proc.kill()
        assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    assert all_dead(pids)


# -- the command line --------------------------------------------------------------------------


def test_the_command_line_hides_files_and_directories_and_exposes_only_inside_hidden_or_private_ones(
    outside_tmp: Path, in_tmp: Path
) -> None:
    var = outside_tmp / "var"
    (var / "image").mkdir(parents=True)
    (var / "image" / "secret").mkdir()
    (var / "db.sqlite3").write_text("")
    (outside_tmp / "visible").mkdir()
    container = image.CONTAINER_DIR
    spec = Sandbox(
        outside_tmp,
        ["python"],
        hide=[var, var / "db.sqlite3", var / "image" / "secret", outside_tmp / "missing"],
        expose_ro=[var / "image", outside_tmp / "visible", in_tmp, container],
    )
    argv = sandbox.bwrap_argv(spec)
    line = " ".join(argv)
    namespaces = sandbox._namespace_args(network=False)
    assert argv[: len(namespaces) + 4] == ["bwrap", *namespaces, "--ro-bind", "/", "/"]
    assert "--unshare-user --disable-userns --unshare-pid --unshare-ipc --unshare-uts" in line
    assert f"--tmpfs {var} " in line and f"--ro-bind /dev/null {var}/db.sqlite3" in line
    assert f"--ro-bind {var}/image {var}/image" in line
    assert str(outside_tmp / "visible") not in line, "visible already: nothing to bind"
    assert f"--ro-bind {in_tmp} {in_tmp}" in line, "under the private /tmp: bound back"
    if sandbox.is_private(container):  # the repository is under /tmp (a CI clone)
        assert f"--ro-bind {container} {container}" in line
    else:
        assert str(container) not in line, "visible already: nothing to bind"
    assert "missing" not in line
    # the secret inside the exposed folder is covered again, after the exposure
    assert line.rindex(f"--tmpfs {var}/image/secret") > line.index(f"--ro-bind {var}/image")
    assert f"--bind {outside_tmp} /opt/ml --die-with-parent" in line and "--unshare-net" in line
    assert "--die-with-parent --new-session --cap-drop ALL --chdir /opt/ml --clearenv -- python" in line
    assert "--unshare-net" not in sandbox.bwrap_argv(Sandbox(outside_tmp, ["python"], network=True))
    with pytest.raises(SandboxError, match="cannot expose"):
        sandbox.bwrap_argv(Sandbox(outside_tmp, ["python"], hide=[var], expose_ro=[var / "nothing"]))
    with pytest.raises(SandboxError, match="it is private there"):
        sandbox.bwrap_argv(Sandbox(outside_tmp, ["python"], expose_ro=[Path("/tmp")]))
