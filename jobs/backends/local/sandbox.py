"""Run one command of the generic container in a bubblewrap sandbox, as SageMaker runs the image.

Inside, the machine's root is read-only; the job directory is the real ``/opt/ml`` (read-write,
so scripts that hard-code ``/opt/ml`` work); ``/tmp``, ``/run`` and ``/opt`` are private
tmpfs (``/opt``'s own entries are bound back read-only, so the machine's pip configuration
still finds ``/opt/wheels`` and the like); every ``hide`` path is covered (a directory by an
empty tmpfs, a file or unix socket by ``/dev/null``) and every ``expose_ro`` path inside a
hidden or private one (so the image environment, ``container/`` and the code still show when
the repository lives under ``/tmp``) is bound back read-only. The sandbox has its own PID and
IPC namespaces, no capabilities, a new session (no ``TIOCSTI`` into our terminal), and its own
network namespace with only a loopback interface when the job asks for network isolation. It
dies with our process (bubblewrap's ``--die-with-parent``).

Where bubblewrap is missing, cannot create namespaces here, or ``ANYJOB_SANDBOX=none``, the
same command runs directly with ``SAGEMAKER_BASE_DIR`` pointing at the job directory, and the
handle says so (``isolated`` is False, ``note`` is a sentence for the job page).
``ANYJOB_SANDBOX=bwrap`` refuses to run without the sandbox instead.

Exit codes follow Docker's convention in both modes: 0–255, and 128+N for a command killed
by signal N (bwrap reports it so; we convert Popen's −N to match).

No Django imports here: the executor passes plain paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("anyjob.local.sandbox")

ML = "/opt/ml"
#: Where ``requirements.txt`` installs inside the sandbox: the root is read-only, /tmp is not.
SANDBOX_PIP_TARGET = "/tmp/anyjob-site"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Places that are private tmpfs inside the sandbox: host paths under them are not visible as
#: they are, so an exposed path there is always bound (/opt's entries are bound back, but an
#: exposed path under /opt gets its own bind all the same: it never depends on that listing).
PRIVATE_DIRS = (Path("/tmp"), Path("/run"), Path("/opt"))
MODES = ("auto", "bwrap", "none")
INFO_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1

_File = int | IO[Any] | None


class SandboxError(Exception):
    """The sandbox could not be set up (a fault of the machine or of the spec, not the job)."""


@dataclass(frozen=True)
class Sandbox:
    """What to run and what it may see.

    ``job_dir`` becomes ``/opt/ml``; ``argv`` runs with exactly ``env`` plus defaults for
    ``PATH``, ``HOME`` and ``LANG``, and with ``SAGEMAKER_BASE_DIR`` and ``ANYJOB_PIP_TARGET``
    set by the sandbox. ``network=False`` is ``EnableNetworkIsolation``. ``hide`` lists host
    paths that must look empty (missing ones are skipped); ``expose_ro`` lists what the command
    needs, such as the image environment: those inside hidden ones or under ``/tmp``, ``/run``
    or ``/opt`` are bound back read-only (the rest is visible already), and none may be under
    ``/opt/ml`` or be a private folder itself. ``scratch_dir`` is only for runs without
    isolation: the private ``/tmp`` stand-in (default ``<job_dir>/.anyjob-tmp``, removed when
    the command ends).
    """

    job_dir: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False
    hide: list[Path] = field(default_factory=list)
    expose_ro: list[Path] = field(default_factory=list)
    scratch_dir: Path | None = None

    def scratch(self) -> Path:
        return Path(self.scratch_dir) if self.scratch_dir else Path(self.job_dir) / ".anyjob-tmp"


# -- is bubblewrap usable? ---------------------------------------------------------------------


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """Why ``bwrap`` cannot make our kind of sandbox on this machine, or None if it can."""
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-net", "--new-session", "--cap-drop", "ALL"]
    try:
        proc = subprocess.run(
            [*cmd, "--", "true"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap ({bwrap}) cannot create a sandbox on this machine ({exc})"
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"bubblewrap ({bwrap}) cannot create a sandbox on this machine ({message})"
    return None


def bwrap_available() -> bool:
    """Whether bubblewrap is installed and can create the sandbox here (checked once)."""
    bwrap = bwrap_path()
    return bwrap is not None and _probe(bwrap) is None


def sandbox_mode() -> str:
    """``ANYJOB_SANDBOX``: ``auto`` (default), ``bwrap`` (required) or ``none`` (never)."""
    mode = (os.environ.get("ANYJOB_SANDBOX") or "auto").strip().lower()
    if mode not in MODES:
        raise SandboxError(f"ANYJOB_SANDBOX must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def isolation_problem() -> str | None:
    """Why the next job would run without isolation (a clause for ``note``), or None."""
    if sandbox_mode() == "none":
        return "the sandbox is turned off (ANYJOB_SANDBOX=none)"
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    return _probe(bwrap)


# -- the command lines -------------------------------------------------------------------------


def environment(spec: Sandbox, *, isolated: bool) -> dict[str, str]:
    """The command's whole environment: defaults, then ``spec.env``, then the sandbox's own."""
    if isolated:
        base, home, target = ML, "/tmp", SANDBOX_PIP_TARGET
    else:
        scratch = spec.scratch()
        base, home, target = str(Path(spec.job_dir).resolve()), str(scratch), str(scratch / "anyjob-site")
    path = [f"{target}/bin"]
    if spec.argv and os.path.isabs(spec.argv[0]):
        path.append(os.path.dirname(spec.argv[0]))  # the image's python and pip come first
    path.append(STANDARD_PATH)
    env = {"PATH": ":".join(path), "HOME": home, "LANG": "C.UTF-8"}
    if not isolated:
        env["TMPDIR"] = home
    env.update(spec.env)
    env["SAGEMAKER_BASE_DIR"] = base
    env["ANYJOB_PIP_TARGET"] = target
    return env


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, parents: list[Path]) -> bool:
    return any(path == p or p in path.parents for p in parents)


def private_dirs() -> list[Path]:
    """``PRIVATE_DIRS`` as real paths (and as named, where one is a symlink)."""
    return list(dict.fromkeys([*PRIVATE_DIRS, *(_real(p) for p in PRIVATE_DIRS)]))


def is_private(path: Path | str) -> bool:
    """Whether the host path ``path`` lies in a place that is private inside the sandbox, so
    that it shows there only if exposed."""
    return _inside(_real(path), private_dirs())


def _cover(path: Path) -> list[str]:
    """bwrap arguments that make ``path`` look empty, or nothing if it does not exist."""
    if path.is_dir():
        return ["--tmpfs", str(path)]
    if path.exists() or path.is_symlink():
        # A file or a unix socket (Redis's): reading gives EACCES, connecting is refused.
        return ["--ro-bind", "/dev/null", str(path)]
    return []


def _opt_entries() -> list[str]:
    """/opt becomes a tmpfs so /opt/ml can be created; bind its entries back read-only."""
    args: list[str] = []
    with contextlib.suppress(FileNotFoundError), os.scandir("/opt") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name == "ml":
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), entry.path]
            else:
                args += ["--ro-bind", entry.path, entry.path]
    return args


def _run_links() -> list[str]:
    """/run becomes a tmpfs; keep DNS working where /etc/resolv.conf points into it."""
    real = os.path.realpath("/etc/resolv.conf")
    if real.startswith("/run/") and os.path.isfile(real):
        return ["--ro-bind", real, real]
    return []


def bwrap_argv(spec: Sandbox, *, bwrap: str = "bwrap", info_fd: int | None = None) -> list[str]:
    """The whole bubblewrap command line for ``spec`` (environment excluded: it goes by env=)."""
    job = _real(spec.job_dir)
    hidden = [_real(p) for p in spec.hide]
    exposed = [_real(p) for p in spec.expose_ro]
    if Path("/") in hidden:
        raise SandboxError("cannot hide / : the sandbox needs the machine's root")
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    args += ["--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/opt"]
    args += _opt_entries() + _run_links()
    for path in hidden:
        args += _cover(path)
    private = private_dirs()
    for path in exposed:
        if not path.exists():
            raise SandboxError(f"cannot expose {path} to the sandbox: it does not exist")
        if _inside(path, [Path(ML), _real(ML)]):
            raise SandboxError(f"cannot expose {path} to the sandbox: {ML} is the job directory there")
        if path in private:
            raise SandboxError(f"cannot expose {path} to the sandbox: it is private there")
        if _inside(path, hidden + private):  # elsewhere it is visible already
            args += ["--ro-bind", str(path), str(path)]
    for path in hidden:  # a hidden path inside an exposed one stays hidden
        if any(p != path and p in path.parents for p in exposed):
            args += _cover(path)
    args += ["--bind", str(job), ML]  # last: nothing may cover it
    args += ["--unshare-pid", "--unshare-ipc"]
    if not spec.network:
        args.append("--unshare-net")
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", ML]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return [*args, "--", *spec.argv]


# -- the running sandbox -----------------------------------------------------------------------


class _Pid:
    """A process we may signal, held by a pidfd so that a reused pid is never hit."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        self.gone = False
        try:
            self.fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.gone = True
        except (OSError, AttributeError):  # no pidfds (Linux < 5.3): plain pids
            pass

    def send(self, sig: int) -> None:
        if self.gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)

    def close(self) -> None:
        self.gone = True
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _ns_pid(pid: int) -> int | None:
    """``pid``'s number inside its innermost PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _exe(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (by parent pid, from /proc)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (ppid := _parent(int(name))) is not None:
            parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


class _Spawner:
    """Starts every process from one thread that lives as long as our process.

    ``--die-with-parent`` (and the fallback's parent-death signal) is the kernel's
    ``PR_SET_PDEATHSIG``, which fires when the *thread* that forked the child exits, not the
    process. Started from a short-lived thread (a pool's worker, a request thread), a job
    would be killed the moment that thread ended. Forking from this thread instead ties the
    job's life to the process. Re-created after ``fork()``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._owner: int | None = None

    def run(self, fn: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._owner != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._queue,), name="sandbox-spawner", daemon=True
                ).start()
                self._owner = os.getpid()
            jobs = self._queue
        done = threading.Event()
        box: dict[str, Any] = {}
        jobs.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["popen"]

    @staticmethod
    def _serve(jobs: queue.SimpleQueue) -> None:
        while True:
            fn, box, done = jobs.get()
            try:
                box["popen"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork time
        self._owner = None


_spawner = _Spawner()
os.register_at_fork(after_in_child=_spawner.after_fork)


def _docker_code(code: int | None) -> int | None:
    return 128 - code if code is not None and code < 0 else code


def _pdeathsig(sig: int):
    """A ``preexec_fn`` asking the kernel to send ``sig`` when the forking thread exits."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def set_it() -> None:
        prctl(PR_SET_PDEATHSIG, sig)

    return set_it


class SandboxedProcess:
    """One running command; start it with ``SandboxedProcess.start(spec, ...)``.

    ``pid`` is bwrap's (or, without isolation, the command's own); ``stdout``/``stderr`` are
    the pipes when ``subprocess.PIPE`` was asked for. ``isolated`` says whether it runs in
    the sandbox; when not, ``note`` is one sentence for the job page. ``argv`` is the full
    command actually run. The command dies with our process, whichever thread started it.
    """

    def __init__(
        self,
        popen: subprocess.Popen,
        argv: list[str],
        *,
        isolated: bool,
        note: str | None = None,
        info: dict[str, Any] | None = None,
        bwrap: str | None = None,
        scratch: Path | None = None,
    ) -> None:
        self._popen = popen
        self.argv = argv
        self.isolated = isolated
        self.note = note
        self.pid = popen.pid
        self.stdout = popen.stdout
        self.stderr = popen.stderr
        self._info = info or {}
        self._bwrap_exe = _file_id(bwrap) if bwrap else None
        init = self._info.get("child-pid")
        self._init = _Pid(init) if isolated and init else None
        self._payload: _Pid | None = None
        self._scratch = scratch
        self._finished = False

    # -- starting ------------------------------------------------------------------------------
    @classmethod
    def start(cls, spec: Sandbox, *, stdout: _File = None, stderr: _File = None) -> SandboxedProcess:
        """Start ``spec.argv``: sandboxed if bubblewrap can, else directly (``isolated`` False).

        stdin is ``/dev/null``; ``stdout``/``stderr`` are passed to ``subprocess.Popen``.
        Raises ``SandboxError`` when the spec is unusable, when ``ANYJOB_SANDBOX=bwrap`` and
        bubblewrap cannot run, or when bubblewrap fails before the sandbox exists.
        """
        job = Path(spec.job_dir)
        if not job.is_dir():
            raise SandboxError(f"the job directory {job} does not exist")
        if not spec.argv:
            raise SandboxError("nothing to run: argv is empty")
        problem = isolation_problem()
        if problem is None:
            return cls._start_bwrap(spec, bwrap_path() or "bwrap", stdout, stderr)
        if sandbox_mode() == "bwrap":
            raise SandboxError(f"ANYJOB_SANDBOX=bwrap, but {problem}")
        return cls._start_direct(spec, f"ran without isolation: {problem}", stdout, stderr)

    @classmethod
    def _start_bwrap(cls, spec: Sandbox, bwrap: str, stdout: _File, stderr: _File) -> SandboxedProcess:
        read_end, write_end = os.pipe()
        try:
            argv = bwrap_argv(spec, bwrap=bwrap, info_fd=write_end)
            env = environment(spec, isolated=True)
            popen = _spawner.run(
                lambda: subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=(write_end,),
                    start_new_session=True,  # terminal signals reach the job only through us
                )
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        try:
            info = _read_info(read_end)
        finally:
            os.close(read_end)
        if info is None:
            popen.kill()
            code = popen.wait()
            raise SandboxError(
                f"bubblewrap failed before the sandbox existed (exit code {code}); its message is in "
                "the command's stderr"
            )
        log.debug("sandbox %s started: %s", info.get("child-pid"), argv)
        return cls(popen, argv, isolated=True, info=info, bwrap=bwrap)

    @classmethod
    def _start_direct(cls, spec: Sandbox, note: str, stdout: _File, stderr: _File) -> SandboxedProcess:
        scratch = spec.scratch()
        created = not scratch.exists()
        scratch.mkdir(parents=True, exist_ok=True)
        argv = list(spec.argv)
        env = environment(spec, isolated=False)
        # SIGTERM, not SIGKILL, when we die: the container then stops its script's group too.
        on_parent_death = _pdeathsig(signal.SIGTERM)
        popen = _spawner.run(
            lambda: subprocess.Popen(
                argv,
                cwd=Path(spec.job_dir).resolve(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=on_parent_death,
            )
        )
        log.info("%s: %s", note, argv)
        return cls(popen, argv, isolated=False, note=note, scratch=scratch if created else None)

    # -- looking -------------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """The exit code once finished (128+N when killed by signal N), else None."""
        return _docker_code(self._popen.returncode)

    def poll(self) -> int | None:
        if self._popen.poll() is not None:
            self._finish()
        return self.returncode

    def payload_pid(self, timeout: float = 2.0) -> int | None:
        """Host pid of the command's own process (the container's ``python``), once it runs.

        In the sandbox that is the child of bwrap's init (pid 1 inside), or the init itself
        if bwrap ran the command as pid 1; it counts only once it has exec'd (before that it
        is still a copy of bwrap). Waits up to ``timeout``; None if the command is not
        running (yet, or any more).
        """
        if not self.isolated:
            return self._popen.pid if self._popen.poll() is None else None
        deadline = time.monotonic() + timeout
        while self._payload is None:
            if self._popen.poll() is not None or self._init is None:
                return None
            found = self._find_payload()
            if found is not None:
                self._payload = _Pid(found)
                if _parent(found) not in (self._init.pid, self.pid):  # exited, pid reused
                    self._payload.close()
                    self._payload = None
                    return None
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return self._payload.pid if self._popen.poll() is None else None

    def _find_payload(self) -> int | None:
        assert self._init is not None
        init = self._init.pid
        children = _children(init)
        # bwrap's init forks the command first, so it is pid 2 inside; orphans adopted
        # later by the init come after it.
        candidate = next((c for c in children if _ns_pid(c) == 2), children[0] if children else init)
        exe = _exe(candidate)
        if exe is None or exe == self._bwrap_exe:
            return None  # not started yet (or gone)
        return candidate

    def pids(self) -> list[int]:
        """Host pids of every live process of the command (in the sandbox: its PID namespace)."""
        if not self.isolated:
            return _descendants(self._popen.pid) if self._popen.poll() is None else []
        namespace = f"pid:[{self._info.get('pid-namespace')}]"
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/ns/pid") == namespace:
                        found.append(int(name))
        return found

    # -- stopping ------------------------------------------------------------------------------
    def terminate(self) -> None:
        """SIGTERM to the command's own process, so its handler runs (the container forwards
        it to the user script). If the command has not started yet, kill instead."""
        if self._popen.poll() is not None:
            return
        if not self.isolated:
            self._popen.send_signal(signal.SIGTERM)
            return
        if self.payload_pid(timeout=5.0) is None or self._payload is None:
            self.kill()
            return
        self._payload.send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to everything the command started; ``wait()`` then returns promptly.

        In the sandbox, killing its init (pid 1 inside) makes the kernel kill every process
        in the PID namespace, whatever signals they ignore and whichever sessions they made.
        Without isolation we kill the process group and every descendant we can find.
        """
        if self.isolated and self._init is not None and not self._init.gone:
            # bwrap then exits by itself, once the namespace is empty and its init reaped.
            self._init.send(signal.SIGKILL)
            return
        if not self.isolated and self._popen.poll() is None:
            victims = self.pids()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finish()
        return self.returncode

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._init is not None and self._init.fd is not None:
            # bwrap has exited, so its init should be gone. It is not if bwrap died before
            # the init set its own parent-death signal (bwrap does not check for that race):
            # then the whole sandbox would live on, orphaned. Kill it, and wait until the
            # kernel has emptied the namespace (the pidfd turns readable when the init exits).
            self._init.send(signal.SIGKILL)
            select.select([self._init.fd], [], [], 10)
        for pid in (self._init, self._payload):
            if pid is not None:
                pid.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> SandboxedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.wait()
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()


def _read_info(fd: int) -> dict[str, Any] | None:
    """bwrap's ``--info-fd`` JSON (``child-pid``, ``pid-namespace``); None if it never came."""
    buf = b""
    deadline = time.monotonic() + INFO_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None  # bwrap exited (or closed the fd) before writing it
        buf += chunk
        with contextlib.suppress(ValueError):
            return json.loads(buf)
    return None
