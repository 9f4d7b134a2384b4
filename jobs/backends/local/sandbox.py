"""Run one command of the generic container in a sandbox, as SageMaker runs the image.

The sandbox is the security boundary of the local backend: the command is a teammate's code.
What holds (each is attacked by ``tests/local/test_attacks.py``):

- **Its own uid.** anyjob (root) drops to an unprivileged uid of its own for each running
  command (``setpriv``; leased from a range no account uses, see ``UidLease``), with no
  capabilities, ``no_new_privs``, no supplementary groups, and bubblewrap then puts it in its
  own user namespace with further user namespaces disabled (``--disable-userns``). It cannot
  read root-only files, signal or trace anyjob or another job, or write host-wide kernel
  settings. The job directory is handed to that uid before the command starts.
- **Nothing from the request outside.** bubblewrap and every helper anyjob runs get a fixed,
  minimal environment; the command's own environment (the request's ``Environment``:
  ``LD_PRELOAD``, ``PYTHONPATH``, …) is set inside the sandbox only (``--clearenv`` and
  ``--setenv``), and the argument list goes through a memfd (``--args``), so values never
  show on a command line either.
- **Its own namespaces**: PID, IPC, UTS (host name ``algo-1``, as on SageMaker), mount, user,
  cgroup and network. Inside, the machine's root is read-only; the job directory is the real
  ``/opt/ml`` (so scripts that hard-code it work); ``/tmp`` is the job's scratch folder (on
  its volume) or a size-capped tmpfs; ``/run`` and ``/opt`` are private (``/opt``'s entries
  bound back read-only); every ``hide`` path looks empty and every ``expose_ro`` path inside
  a hidden or private one is bound back read-only.
- **Its own network.** With ``network=False`` (``EnableNetworkIsolation``) only a loopback
  interface. Otherwise user-mode networking (``pasta`` from Debian's ``passt``) gives the
  namespace outbound access through anyjob's side, never to the host's loopback (no gateway
  mapping, no port forwarding either way), and ``prohibit`` routes refuse link-local
  addresses (169.254.169.254, the instance metadata service) and every address of this
  machine. Abstract unix sockets are per network namespace, so the host's are out of reach.
  Without ``pasta`` a job that asked for the network gets none, and ``notes`` say so.
- **Resources**: ``spec.preexec`` (a cgroup's, ``resources.py``) runs in the child before
  anything else, so bubblewrap and all it starts are in the job's cgroup.

It fails closed: where any of this cannot be built (bubblewrap missing, namespaces refused,
not running as root), ``start`` raises ``SandboxError`` and ``isolation_problem()`` says why.
Only ``ANYJOB_SANDBOX=off`` (a single-user laptop) runs the same command directly, as the
service user, with ``SAGEMAKER_BASE_DIR`` pointing at the job directory; the handle then
says so (``isolated`` False, ``note`` a sentence for the job page).

Exit codes follow Docker's convention in both modes: 0–255, and 128+N for a command killed
by signal N (bwrap reports it so; we convert Popen's −N to match).

No Django imports here: the executor passes plain paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import json
import logging
import os
import pwd
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("anyjob.local.sandbox")

ML = "/opt/ml"
HOSTNAME = "algo-1"
#: Where ``requirements.txt`` installs inside the sandbox: the root is read-only, /tmp is not.
SANDBOX_PIP_TARGET = "/tmp/anyjob-site"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The whole environment of every process anyjob runs outside the sandbox (bwrap, setpriv,
#: pasta, ip): fixed, so nothing of a request or of the server's own environment reaches them.
HELPER_ENV = {"PATH": STANDARD_PATH, "LANG": "C.UTF-8"}
#: Places that are private inside the sandbox: host paths under them are not visible as
#: they are, so an exposed path there is always bound (/opt's entries are bound back, but an
#: exposed path under /opt gets its own bind all the same: it never depends on that listing).
PRIVATE_DIRS = (Path("/tmp"), Path("/run"), Path("/opt"))
MODES = ("on", "off")
_LEGACY_MODES = {"auto": "on", "bwrap": "on", "none": "off"}
INFO_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1
#: The uids jobs run as: ``ANYJOB_SANDBOX_UID_BASE`` and the next ``ANYJOB_SANDBOX_UID_COUNT``
#: (uids with an account on this machine are skipped). High, so no subordinate-uid range of
#: a real user (/etc/subuid usually starts at 100000) overlaps them.
UID_BASE = 2_000_000_000
UID_COUNT = 4096
#: Machine-wide: every anyjob on this machine leases from the same range, so two never share.
UID_LOCK_DIR = Path("/run/anyjob/uids")
#: Refused inside a job's network namespace, besides every address of this machine.
PROHIBITED_NETS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::/32")
DEFAULT_TMP_BYTES = 1024**3  # /tmp as tmpfs (RAM, charged to the job's memory) without a volume

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
    ``/opt/ml`` or be a private folder itself. ``tmp_dir`` is the host folder that becomes
    ``/tmp`` (on the job's volume, so ``VolumeSizeInGB`` caps it); without one ``/tmp`` is a
    tmpfs of ``tmp_bytes``. ``binds`` are extra read-write folders (host path, path inside),
    such as the folder an endpoint's server puts its socket in. ``preexec`` runs in the child
    before anything else (joining the job's cgroup). ``uid`` is the uid to run as (leased
    here when None). ``scratch_dir`` is only for runs without isolation: the private ``/tmp``
    stand-in (default ``<job_dir>/.anyjob-tmp``, removed when the command ends).
    """

    job_dir: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False
    hide: list[Path] = field(default_factory=list)
    expose_ro: list[Path] = field(default_factory=list)
    scratch_dir: Path | None = None
    tmp_dir: Path | None = None
    tmp_bytes: int = DEFAULT_TMP_BYTES
    binds: list[tuple[Path, str]] = field(default_factory=list)
    preexec: Callable[[], None] | None = field(default=None, compare=False)
    uid: int | None = None
    #: The image's ``bin/`` (its python, pip), first on PATH after the pip target; default:
    #: the folder of an absolute ``argv[0]``. Needed when the command is not the image's python
    #: (``ContainerEntrypoint``, such as ``/bin/bash -c …``).
    image_bin: Path | None = None
    #: Also point a bare ``pip install`` (``PIP_TARGET``) and Python (``PYTHONPATH``) at the pip
    #: target, for commands other than the container's own ``train`` (which does it itself);
    #: the request's environment still wins.
    pip_target_env: bool = False

    def scratch(self) -> Path:
        return Path(self.scratch_dir) if self.scratch_dir else Path(self.job_dir) / ".anyjob-tmp"


# -- can the sandbox run here? -----------------------------------------------------------------


def bwrap_path() -> str | None:
    """bubblewrap: ``ANYJOB_BWRAP`` if set (a path), else ``bwrap`` on the standard PATH."""
    chosen = os.environ.get("ANYJOB_BWRAP", "").strip()
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    return shutil.which("bwrap", path=STANDARD_PATH)


def pasta_path() -> str | None:
    return shutil.which("pasta", path=STANDARD_PATH)


def sandbox_mode() -> str:
    """``ANYJOB_SANDBOX``: ``on`` (the default: jobs run sandboxed or not at all) or ``off``
    (a single-user laptop: jobs run as the service user). ``auto``/``bwrap`` mean on and
    ``none`` off, as in earlier versions."""
    raw = (os.environ.get("ANYJOB_SANDBOX") or "on").strip().lower()
    mode = _LEGACY_MODES.get(raw, raw)
    if mode not in MODES:
        raise SandboxError(f"ANYJOB_SANDBOX must be on or off, not {raw!r}")
    return mode


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str, uid: int) -> str | None:
    """Why the sandbox's whole chain cannot run on this machine, or None if it can."""
    argv = [*_drop_privileges(uid), bwrap, *_namespace_args(network=False), "--ro-bind", "/", "/"]
    argv += ["--dev", "/dev", "--proc", "/proc", "--cap-drop", "ALL", "--", "true"]
    try:
        proc = subprocess.run(
            argv, env=HELPER_ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap ({bwrap}) cannot create a sandbox on this machine ({exc})"
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"bubblewrap ({bwrap}) cannot create a sandbox on this machine ({message})"
    return None


def isolation_problem() -> str | None:
    """Why jobs cannot run sandboxed on this machine (a sentence naming the cause), or None
    when they can, and None when the sandbox is turned off (``ANYJOB_SANDBOX=off``)."""
    if sandbox_mode() == "off":
        return None
    if os.geteuid() != 0:
        return (
            f"anyjob runs as uid {os.geteuid()}, not root: the sandbox needs root to run each job "
            "as an unprivileged uid of its own"
        )
    for tool in ("setpriv", "unshare", "nsenter", "ip"):
        if shutil.which(tool, path=STANDARD_PATH) is None:
            return f"{tool} is not installed (Debian: util-linux / iproute2)"
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    return _probe(bwrap, UID_BASE + UID_COUNT - 1)


def bwrap_available() -> bool:
    """Whether the sandbox can run here (checked once)."""
    return sandbox_mode() == "on" and isolation_problem() is None


def network_problem() -> str | None:
    """Why a job that may use the network would get none here, or None."""
    if pasta_path() is None:
        return "pasta (Debian's passt package) is not installed, so jobs get no outbound network"
    return None


# -- uids ---------------------------------------------------------------------------------------


class UidLease:
    """One uid from the sandbox's range, held (an ``flock`` on its lock file) until released
    or until this process dies. Two running commands never share a uid, on this machine."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd: int | None = fd

    @classmethod
    def take(cls) -> UidLease:
        base = int(os.environ.get("ANYJOB_SANDBOX_UID_BASE") or UID_BASE)
        count = int(os.environ.get("ANYJOB_SANDBOX_UID_COUNT") or UID_COUNT)
        UID_LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        start = int.from_bytes(os.urandom(2), "big") % count  # spread, so reuse is rare
        for i in range(count):
            uid = base + (start + i) % count
            with contextlib.suppress(KeyError):
                pwd.getpwuid(uid)
                continue  # an account uses it
            fd = os.open(UID_LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(uid, fd)
        raise SandboxError(f"every sandbox uid ({base}–{base + count - 1}) is in use")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hand_over(path: Path, uid: int) -> None:
    """Make ``path`` and everything below it belong to ``uid`` (links themselves, never what
    they point at). Only anyjob has written there so far."""
    path = Path(path)
    os.lchown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, uid)


# -- the command lines -------------------------------------------------------------------------


def environment(spec: Sandbox, *, isolated: bool) -> dict[str, str]:
    """The command's whole environment: defaults, then ``spec.env``, then the sandbox's own."""
    if isolated:
        base, home, target = ML, "/tmp", SANDBOX_PIP_TARGET
    else:
        scratch = spec.scratch()
        base, home, target = str(Path(spec.job_dir).resolve()), str(scratch), str(scratch / "anyjob-site")
    path = [f"{target}/bin"]
    if spec.image_bin is not None:
        path.append(str(spec.image_bin))
    elif spec.argv and os.path.isabs(spec.argv[0]):
        path.append(os.path.dirname(spec.argv[0]))  # the image's python and pip come first
    path.append(STANDARD_PATH)
    env = {"PATH": ":".join(path), "HOME": home, "LANG": "C.UTF-8"}
    if not isolated:
        env["TMPDIR"] = home
    if spec.pip_target_env:
        env.update(PIP_TARGET=target, PYTHONPATH=target)
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


def _drop_privileges(uid: int) -> list[str]:
    """``setpriv``: from root to ``uid`` with no groups, capabilities or new privileges."""
    if os.geteuid() != 0:
        return []
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def _namespace_args(*, network: bool) -> list[str]:
    args = ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", HOSTNAME]
    if not network:
        args.append("--unshare-net")  # else the namespace comes from `unshare --net` (pasta's)
    return args


def _reachable(path: Path) -> bool:
    """Whether an unprivileged uid can walk to ``path`` (every folder above it searchable by
    others). Hiding what it cannot reach anyway is skipped: bubblewrap, running as that uid,
    could not mount over it."""
    return _closed_ancestor(path) is None and all(p.exists() for p in path.parents)


def _closed_ancestor(path: Path) -> Path | None:
    """The topmost folder above ``path`` that others may not search, or None."""
    for parent in reversed(path.parents):
        try:
            if not os.stat(parent).st_mode & 0o001:
                return parent
        except OSError:
            return None
    return None


def bwrap_argv(
    spec: Sandbox,
    *,
    bwrap: str = "bwrap",
    info_fd: int | None = None,
    block_fd: int | None = None,
    env: dict[str, str] | None = None,
    source_for: Callable[[Path], str] | None = None,
) -> list[str]:
    """The whole bubblewrap command line for ``spec``, the command's environment included
    (``--clearenv`` then ``--setenv``; pass it through ``--args`` so no value shows in
    ``/proc/*/cmdline``). With ``source_for`` (a host path → where ``_Stage`` shows it), the
    job directory, ``/tmp``, the extra binds and the exposed paths are bound from there, so
    the job's uid need not be able to walk to them on the host."""
    job = _real(spec.job_dir)
    hidden = [_real(p) for p in spec.hide]
    exposed = [_real(p) for p in spec.expose_ro]
    if Path("/") in hidden:
        raise SandboxError("cannot hide / : the sandbox needs the machine's root")

    def bind(path: Path, dest: str, *, ro: bool = False) -> list[str]:
        source = str(path) if source_for is None else source_for(path)
        return ["--ro-bind" if ro else "--bind", source, dest]

    args = [bwrap, *_namespace_args(network=spec.network)]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if spec.tmp_dir is not None:
        args += bind(_real(spec.tmp_dir), "/tmp")
    else:
        args += ["--size", str(spec.tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--tmpfs", "/run", "--tmpfs", "/opt"]
    args += _opt_entries() + _run_links()
    for path in hidden:
        if _reachable(path):
            args += _cover(path)
    # A folder the job's uid cannot walk (/root, where an interpreter may live) hides nothing
    # more for being covered; covering it lets what is exposed below it be bound there.
    for closed in sorted({_closed_ancestor(p) for p in exposed} - {None} - set(hidden)):
        if not _inside(closed, hidden):
            args += ["--tmpfs", str(closed)]
    private = private_dirs()
    for path in exposed:
        if not path.exists():
            raise SandboxError(f"cannot expose {path} to the sandbox: it does not exist")
        if _inside(path, [Path(ML), _real(ML)]):
            raise SandboxError(f"cannot expose {path} to the sandbox: {ML} is the job directory there")
        if path in private:
            raise SandboxError(f"cannot expose {path} to the sandbox: it is private there")
        if _inside(path, hidden + private) or not _reachable(path):  # else it is visible already
            args += bind(path, str(path), ro=True)
    for path in hidden:  # a hidden path inside an exposed one stays hidden
        if any(p != path and p in path.parents for p in exposed):
            args += _cover(path)
    for host, inside in spec.binds:
        args += bind(_real(host), inside)
    args += bind(job, ML)  # last: nothing may cover it
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", ML]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        args += ["--block-fd", str(block_fd)]
    args.append("--clearenv")
    for key, value in (env or {}).items():
        args += ["--setenv", key, value]
    return [*args, "--", *spec.argv]


def _without_values(args: list[str]) -> list[str]:
    """``args`` with each ``--setenv`` value replaced: what may be logged or shown."""
    out, i = [], 0
    while i < len(args):
        if args[i] == "--setenv" and i + 2 < len(args):
            out += ["--setenv", args[i + 1], "<value>"]
            i += 3
        else:
            out.append(args[i])
            i += 1
    return out


def _args_file(args: list[str]) -> int:
    """A memfd holding ``args`` NUL-separated, for bwrap's ``--args FD`` (passed to bwrap
    alone), so no value shows on a command line."""
    encoded = [a.encode() for a in args]
    if any(b"\0" in a for a in encoded):
        raise SandboxError("an argument or environment value of the sandbox holds a NUL byte")
    fd = os.memfd_create("anyjob-sandbox-args", os.MFD_CLOEXEC)
    with open(fd, "wb", closefd=False) as fh:
        fh.write(b"".join(a + b"\0" for a in encoded))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def host_addresses() -> list[str]:
    """Every address of this machine's interfaces (``ip -json address``)."""
    try:
        out = subprocess.run(
            ["ip", "-json", "address"], env=HELPER_ENV, capture_output=True, text=True, timeout=10
        ).stdout
        found = []
        for link in json.loads(out or "[]"):
            for addr in link.get("addr_info", []):
                ip = ipaddress.ip_address(addr["local"])
                if not ip.is_loopback:
                    found.append(str(ip))
        return found
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return []


CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
#: Where ``_Stage`` shows the sandbox's sources to the job's uid, in a private mount namespace.
STAGE_DIR = "/run/anyjob/stage"


class _Stage:
    """Puts every host path the sandbox binds where the job's uid can reach it.

    bubblewrap runs as the job's uid, so a source it binds must be reachable by that uid:
    the job directory under anyjob's 0700 state folder, an interpreter under /root, a test's
    temporary folder are not. ``preexec()`` gives the child (still root, before ``setpriv``)
    its own mount namespace, a tmpfs on ``STAGE_DIR`` (mode 0711: it can walk it, not list
    it) and a bind of each source there; bwrap binds from those. Nothing changes on the host,
    and the namespace goes away with the sandbox.
    """

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes, bool]] = []

    def path_for(self, path: Path) -> str:
        target = f"{STAGE_DIR}/{len(self.items)}"
        self.items.append((os.fsencode(path), target.encode(), Path(path).is_dir()))
        return target

    def preexec(self, then: Callable[[], None] | None = None) -> Callable[[], None]:
        libc = ctypes.CDLL(None, use_errno=True)  # looked up before fork, not in the child
        mount, unshare = libc.mount, libc.unshare
        stage = STAGE_DIR.encode()
        os.makedirs(STAGE_DIR, mode=0o711, exist_ok=True)
        items = list(self.items)

        def check(result: int, what: str) -> None:
            if result != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"{what}: {os.strerror(errno)}")

        def run() -> None:
            if items:
                check(unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
                check(mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
                check(mount(b"tmpfs", stage, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0711"), "mount tmpfs")
                for source, target, is_dir in items:
                    if is_dir:
                        os.mkdir(target, 0o711)
                    else:
                        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
                    check(mount(source, target, None, MS_BIND | MS_REC, None), "mount --bind")
            if then is not None:
                then()

        return run


class _Network:
    """User-mode networking for one sandbox's network namespace (``pasta``), and the routes
    that keep it off this machine; ``close()`` ends it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.note: str | None = None

    def setup(self, holder: int, child: int, uid: int, preexec: Callable[[], None] | None = None) -> None:
        """``holder`` is in the namespace's owning user namespace (bwrap's own process),
        ``child`` in the namespace. ``preexec`` puts pasta in the job's cgroup, so that it
        ends with the job's processes even when anyjob's own process is killed (pasta does
        not notice a namespace it joined by ``/proc`` path going away). On any failure the
        job keeps a namespace with loopback only, and ``note`` says why."""
        net = f"/proc/{child}/ns/net"
        self._ip(net, "link", "set", "lo", "up")
        problem = network_problem()
        if problem is None:
            with tempfile.TemporaryDirectory(prefix="anyjob-pasta-") as tmp:
                pidfile = Path(tmp) / "pid"
                os.chown(tmp, uid, uid)
                argv = [pasta_path() or "pasta", "--config-net", "--quiet", "--runas", str(uid)]
                # No gateway → host loopback mapping; no port forwarding in either direction.
                argv += ["--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none"]
                argv += ["-P", str(pidfile), "--netns", f"/proc/{holder}/ns/net"]
                argv += ["--userns", f"/proc/{holder}/ns/user"]
                try:
                    proc = subprocess.run(
                        argv,
                        env=HELPER_ENV,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=20,
                        preexec_fn=preexec,
                    )
                    with contextlib.suppress(OSError, ValueError):
                        self.pid = int(pidfile.read_text())
                    if proc.returncode != 0:
                        lines = [x for x in proc.stderr.splitlines() if "syslog" not in x]
                        problem = f"pasta failed ({(lines or [f'exit code {proc.returncode}'])[-1]})"
                except (OSError, subprocess.TimeoutExpired) as exc:
                    problem = f"pasta could not start ({exc})"
        if problem is not None:
            self.close()
            self.note = f"no outbound network: {problem}"
            return
        for target in [*PROHIBITED_NETS, *host_addresses()]:
            family = "-6" if ":" in target else "-4"
            ok = self._ip(net, family, "route", "replace", "prohibit", target)
            if not ok:
                self.close()
                raise SandboxError(f"could not refuse {target} inside the job's network namespace")

    @staticmethod
    def _ip(net: str, *args: str) -> bool:
        proc = subprocess.run(
            ["nsenter", f"--net={net}", "--", "ip", *args],
            env=HELPER_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
        return proc.returncode == 0

    def close(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None


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
        lease: UidLease | None = None,
        network: _Network | None = None,
        uid: int | None = None,
    ) -> None:
        self._popen = popen
        self.argv = argv
        self.isolated = isolated
        self.note = note
        self.pid = popen.pid
        self.stdout = popen.stdout
        self.stderr = popen.stderr
        self.uid = uid
        self._info = info or {}
        self._bwrap_exe = _file_id(bwrap) if bwrap else None
        init = self._info.get("child-pid")
        self._init = _Pid(init) if isolated and init else None
        self._payload: _Pid | None = None
        self._scratch = scratch
        self._lease = lease
        self._network = network
        self._finished = False

    @property
    def notes(self) -> list[str]:
        """Sentences for the job page: what the command runs without (or with)."""
        found = [self.note] if self.note else []
        if self._network is not None and self._network.note:
            found.append(self._network.note)
        return found

    # -- starting ------------------------------------------------------------------------------
    @classmethod
    def start(cls, spec: Sandbox, *, stdout: _File = None, stderr: _File = None) -> SandboxedProcess:
        """Start ``spec.argv`` in the sandbox (``isolated`` True), or directly when the
        sandbox is turned off (``ANYJOB_SANDBOX=off``; ``isolated`` False, ``note`` says so).

        stdin is ``/dev/null``; ``stdout``/``stderr`` are passed to ``subprocess.Popen``.
        Raises ``SandboxError`` when the spec is unusable, when the sandbox cannot run on
        this machine (it never falls back to running the command unprotected), or when
        bubblewrap fails before the sandbox exists.
        """
        job = Path(spec.job_dir)
        if not job.is_dir():
            raise SandboxError(f"the job directory {job} does not exist")
        if not spec.argv:
            raise SandboxError("nothing to run: argv is empty")
        if sandbox_mode() == "off":
            return cls._start_direct(
                spec, "ran without isolation: the sandbox is turned off (ANYJOB_SANDBOX=off)", stdout, stderr
            )
        problem = isolation_problem()
        if problem is not None:
            raise SandboxError(f"the sandbox cannot run on this machine: {problem}")
        return cls._start_bwrap(spec, bwrap_path() or "bwrap", stdout, stderr)

    @classmethod
    def _start_bwrap(cls, spec: Sandbox, bwrap: str, stdout: _File, stderr: _File) -> SandboxedProcess:
        lease = None if spec.uid is not None else UidLease.take()
        uid = spec.uid if spec.uid is not None else lease.uid  # type: ignore[union-attr]
        fds: list[int] = []
        popen = None
        network = _Network()
        try:
            hand_over(Path(spec.job_dir), uid)
            if spec.tmp_dir is not None:
                hand_over(Path(spec.tmp_dir), uid)
            for host, _ in spec.binds:
                hand_over(Path(host), uid)
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds += [info_r, info_w, block_r, block_w]
            stage = _Stage()
            args = bwrap_argv(
                spec,
                bwrap=bwrap,
                info_fd=info_w,
                block_fd=block_r,
                env=environment(spec, isolated=True),
                source_for=stage.path_for,
            )
            split = args.index("--")  # options through the memfd, the command on the line
            args_fd = _args_file(args[1:split])
            fds.append(args_fd)
            argv = _drop_privileges(uid)
            if spec.network:
                # The network namespace is made here, owned by the job's first user namespace,
                # so pasta (as the job's uid) can join it; bwrap's nested one cannot touch it.
                argv += ["unshare", "--user", "--net", f"--map-user={uid}", f"--map-group={uid}", "--"]
            argv += [bwrap, "--args", str(args_fd), *args[split:]]
            preexec = stage.preexec(then=spec.preexec)
            popen = _spawner.run(
                lambda: subprocess.Popen(
                    argv,
                    env=HELPER_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=(info_w, block_r, args_fd),
                    start_new_session=True,  # terminal signals reach the job only through us
                    preexec_fn=preexec,
                )
            )
            for fd in (info_w, block_r, args_fd):
                os.close(fd)
                fds.remove(fd)
            info = _read_info(info_r)
            if info is None:
                popen.kill()
                code = popen.wait()
                raise SandboxError(
                    f"bubblewrap failed before the sandbox existed (exit code {code}); its message is "
                    "in the command's stderr"
                )
            if spec.network:
                network.setup(popen.pid, info["child-pid"], uid, spec.preexec)
            os.write(block_w, b"go")  # the command starts only now
        except BaseException:
            network.close()
            if popen is not None and popen.poll() is None:
                popen.kill()
                popen.wait()
            if lease is not None:
                lease.release()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        shown = [*argv[: argv.index(bwrap)], *_without_values(args)]  # no environment values
        log.debug("sandbox %s started as uid %d: %s", info.get("child-pid"), uid, shown)
        return cls(
            popen,
            shown,
            isolated=True,
            info=info,
            bwrap=bwrap,
            lease=lease,
            network=network,
            uid=uid,
        )

    @classmethod
    def _start_direct(cls, spec: Sandbox, note: str, stdout: _File, stderr: _File) -> SandboxedProcess:
        scratch = spec.scratch()
        created = not scratch.exists()
        scratch.mkdir(parents=True, exist_ok=True)
        argv = list(spec.argv)
        env = environment(spec, isolated=False)
        # SIGTERM, not SIGKILL, when we die: the container then stops its script's group too.
        on_parent_death = _pdeathsig(signal.SIGTERM)
        extra = spec.preexec

        def preexec() -> None:
            on_parent_death()
            if extra is not None:
                extra()

        popen = _spawner.run(
            lambda: subprocess.Popen(
                argv,
                cwd=Path(spec.job_dir).resolve(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=preexec,
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
        if self._network is not None:
            self._network.close()
        if self._lease is not None:
            self._lease.release()
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
