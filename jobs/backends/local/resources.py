"""An instance's resources, as SageMaker gives them: one job or endpoint, held to its type.

Each run (a training job, an endpoint's model server) gets its own cgroup, ``anyjob/<name>``,
with its instance type's memory (no swap), its vCPUs as a CPU quota and a process-count
limit. The machine decides how (``detect``):

- **cgroup v2** when a writable cgroup2 hierarchy delegates the ``memory`` controller (and, if
  it can, ``cpu`` and ``pids``): the runs live under the nearest cgroup that already enables
  them for its children (the root, where they are enabled as needed);
- **cgroup v1** otherwise, when the ``memory`` hierarchy (and ``cpu``, ``pids`` if mounted) is
  writable: the runs live under this process's own cgroup of each hierarchy, so they stay
  inside whatever limits the service itself runs under;
- **neither**: the last resort is resource limits set in the child (``fallback_preexec``):
  ``RLIMIT_AS`` for memory (address space, which is more than resident memory: programs that
  reserve large mappings fail early), ``RLIMIT_NPROC`` for processes (counted per real uid,
  which is exact when each run has a uid of its own), and no CPU limit.

The child joins its cgroups before it runs anything: ``create`` opens the cgroups'
``cgroup.procs`` files here, and ``RunCgroup.preexec`` (for ``subprocess.Popen(preexec_fn=…)``)
only writes ``b"0"`` ("this process") to those descriptors. CPython runs ``preexec_fn`` in the
forked child after ``user=``/``group=`` and *before* it closes descriptors for ``close_fds``
(``_posixsubprocess.c``: "close FDs after executing preexec_fn"), then execs; so the
descriptors need no ``pass_fds``, and being close-on-exec they never reach the payload.
Writing to a descriptor opened by root works after a uid change too: cgroup v2 checks the
opener's credentials, cgroup v1 lets a process move itself.

What was applied is in ``applied`` (JSON-ready) and ``describe()`` (one line for the job
page). No Django here: the job process imports this module before Django is set up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.backends.local import instances
from jobs.backends.local.instances import InstanceType

log = logging.getLogger(__name__)

#: The folder, in each hierarchy, that holds one cgroup per run.
PARENT = "anyjob"
#: The controllers a run uses; memory is the one without which cgroups are not used at all.
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
#: How long ``remove`` waits for a run's processes to be gone after SIGKILL.
EMPTY_TIMEOUT = 10.0
MIB = 1024**2
GIB = 1024**3
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CgroupError(OSError):
    """A run's cgroup could not be made, filled or removed."""


# -- what a run is given ----------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_bytes: int
    pids: int


def limits_for(instance_type: InstanceType, *, max_pids: int) -> Limits:
    """The limits of one instance of ``instance_type`` (``instances.lookup``), with at most
    ``max_pids`` processes (``ANYJOB_LOCAL_MAX_PROCESSES``)."""
    return Limits(cpus=float(instance_type.vcpus), memory_bytes=instance_type.memory_bytes, pids=max_pids)


def instance_type_problem(name: str) -> str | None:
    """Why the local emulator cannot give a run of ``name`` its resources, or None if it can.

    The caller refuses the request with this message (a ``ValidationException``)."""
    if instances.lookup(name) is not None:
        return None
    return (
        f"The local backend does not know the resources of instance type {name!r}: it emulates "
        f"the types listed in {instances.TABLE.name} (vCPUs, memory and accelerators as AWS "
        "publishes them). Choose one of those, or run on the sagemaker backend."
    )


def machine() -> tuple[int, int]:
    """This machine's cores (those this process may use) and memory in bytes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_max_instances() -> int:
    """How many instances the emulator runs at once by default: one per core, and at most one
    per 2 GiB of memory, at least one: ``max(1, min(cores, memory_GiB // 2))`` (2 cores and
    24 GiB give 2)."""
    cores, memory = machine()
    return max(1, min(cores, memory // GIB // 2))


def _amount(limits: Limits) -> list[str]:
    """The limits in words; an amount past the machine's own says so (an ml.m5.24xlarge is
    held to 96 CPUs, which a 2-core machine cannot give it)."""
    cores, memory = machine()
    cpus = f"{limits.cpus:g} CPU" + ("" if limits.cpus == 1 else "s")
    if limits.cpus > cores:
        cpus += f" (the machine has {cores})"
    ram = _bytes(limits.memory_bytes) + " memory"
    if limits.memory_bytes > memory:
        ram += f" (the machine has {_bytes(memory)})"
    return [cpus, ram, f"{limits.pids} processes"]


def _bytes(n: int) -> str:
    return f"{n / GIB:g} GiB" if n >= GIB else f"{n / MIB:g} MiB"


# -- what this machine offers -------------------------------------------------------------------
@dataclass(frozen=True)
class Support:
    """How runs are confined here: ``mode`` is "v2", "v1" or "none"; ``parents`` maps each
    usable controller to the folder its runs' cgroups are made in (one folder for v2);
    ``reason`` says what was found, and what is missing."""

    mode: str
    parents: dict[str, Path] = field(default_factory=dict)
    reason: str = ""
    #: v2 only: the cgroup whose ``cgroup.subtree_control`` must enable the controllers.
    delegate: Path | None = None


@dataclass(frozen=True)
class _Mount:
    point: Path
    root: str  # the cgroup path the mount shows at its top
    fstype: str
    controllers: frozenset[str]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mounts(mountinfo: str) -> list[_Mount]:
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = set(tail[2].split(",")) | set(fields[5].split(",") if len(fields) > 5 else [])
        controllers = (
            frozenset(c for c in CONTROLLERS if c in options) if tail[0] == "cgroup" else frozenset()
        )
        found.append(_Mount(Path(_unescape(fields[4])), _unescape(fields[3]), tail[0], controllers))
    return found


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its cgroup v2 path."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _inside(mount: _Mount, own: str | None) -> Path:
    """The folder of this process's cgroup within ``mount`` (the mount's top if it is not there)."""
    if own is not None:
        root = mount.root.rstrip("/")
        if own == root or own.startswith(root + "/"):
            candidate = mount.point / own[len(root) :].lstrip("/")
            if candidate.is_dir():
                return candidate
    return mount.point


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _v2(mount: _Mount, own: str | None) -> tuple[Support | None, str]:
    """Runs' parent on a cgroup2 mount: the nearest cgroup from this process's upwards whose
    ``cgroup.subtree_control`` enables the controllers (or the mount's top, where they are
    enabled on demand). A non-top cgroup with processes can never enable them itself."""
    start = _inside(mount, own)
    chain = [start, *[p for p in start.parents if p.is_relative_to(mount.point)]]
    for cgroup in chain:
        if cgroup == mount.point:
            offered = set(_read(cgroup / "cgroup.controllers").split())
            writable = os.access(cgroup / "cgroup.subtree_control", os.W_OK)
        else:
            offered = set(_read(cgroup / "cgroup.subtree_control").split())
            writable = os.access(cgroup, os.W_OK)
        usable = [c for c in CONTROLLERS if c in offered]
        if "memory" in usable and writable:
            parent = cgroup / PARENT
            missing = [c for c in CONTROLLERS if c not in usable]
            reason = f"cgroup v2 under {cgroup}" + (
                f" (no {', '.join(missing)} controller)" if missing else ""
            )
            return Support("v2", dict.fromkeys(usable, parent), reason, delegate=cgroup), ""
    offered = _read(mount.point / "cgroup.controllers").split()
    why = (
        f"the cgroup2 mount at {mount.point} delegates no memory controller "
        f"(cgroup.controllers: {' '.join(offered) or 'empty'})"
        if "memory" not in offered
        else f"no writable cgroup under {mount.point} enables the memory controller for its children"
    )
    return None, why


def detect(mountinfo: str | None = None, proc_cgroup: str | None = None) -> Support:
    """What this machine offers for confining runs (reads ``/proc/self/mountinfo`` and
    ``/proc/self/cgroup`` unless given their text)."""
    if mountinfo is None:
        mountinfo = _read(Path("/proc/self/mountinfo"))
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    mounts, own = _mounts(mountinfo), _own_paths(proc_cgroup)
    problems = []
    for mount in (m for m in mounts if m.fstype == "cgroup2"):
        support, why = _v2(mount, own.get(""))
        if support is not None:
            return support
        problems.append(why)
    parents: dict[str, Path] = {}
    for controller in CONTROLLERS:
        mount = next((m for m in mounts if controller in m.controllers), None)
        if mount is None:
            problems.append(f"no cgroup v1 {controller} hierarchy is mounted")
            continue
        where = _inside(mount, own.get(controller))
        if os.access(where, os.W_OK):
            parents[controller] = where / PARENT
        else:
            problems.append(f"the cgroup v1 {controller} hierarchy ({where}) is not writable")
    if "memory" in parents:
        places = ", ".join(f"{c} at {p.parent}" for c, p in parents.items())
        missing = [c for c in CONTROLLERS if c not in parents]
        reason = f"cgroup v1: {places}" + (f" (no {', '.join(missing)})" if missing else "")
        return Support("v1", parents, reason)
    return Support("none", {}, "; ".join(problems) or "no cgroup hierarchy is mounted")


# -- one run's cgroup --------------------------------------------------------------------------
def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _pids(cgroup: Path) -> set[int]:
    """Every process in ``cgroup`` and the cgroups below it."""
    found: set[int] = set()
    for folder, _dirs, _files in os.walk(cgroup):
        for line in _read(Path(folder) / "cgroup.procs").split():
            found.add(int(line))
    return found


def _rmdir_tree(cgroup: Path) -> None:
    """Remove ``cgroup`` and the cgroups below it, deepest first (cgroupfs keeps its files)."""
    if not cgroup.is_dir():
        return
    for folder, dirs, _files in os.walk(cgroup, topdown=False):
        for name in dirs:
            os.rmdir(Path(folder) / name)
    os.rmdir(cgroup)


def _signal_all(cgroups: list[Path]) -> bool:
    """SIGKILL every process in ``cgroups``; False once they are all empty. A pid is signalled
    through a pidfd taken while it was still listed, so a reused pid is never hit."""
    listed = set().union(*(_pids(c) for c in cgroups))
    if not listed:
        return False
    if not hasattr(os, "pidfd_open"):  # Linux < 5.3
        for pid in listed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return True
    handles: dict[int, int] = {}
    for pid in listed:
        with contextlib.suppress(OSError):  # gone already
            handles[pid] = os.pidfd_open(pid)
    still = set().union(*(_pids(c) for c in cgroups))
    for pid, handle in handles.items():
        try:
            if pid in still:
                signal.pidfd_send_signal(handle, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(handle)
    return True


def _kill_and_wait(cgroups: list[Path], kill_files: list[Path], timeout: float) -> bool:
    """Kill everything in ``cgroups`` and wait until they are empty; False if they never were."""
    deadline = time.monotonic() + timeout
    for kill in kill_files:
        with contextlib.suppress(OSError):
            _write(kill, "1")
    while _signal_all(cgroups):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class RunCgroup:
    """One run's cgroup in every usable hierarchy. Make it with ``create``."""

    def __init__(self, name: str, limits: Limits, support: Support) -> None:
        self.name = name
        self.limits = limits
        self.mode = support.mode
        self.support = support
        #: The run's cgroup folders, one per hierarchy (v2: one in all).
        self.paths: dict[str, Path] = {c: p / name for c, p in support.parents.items()}
        self.applied: dict[str, Any] = {}
        self._left_out: dict[str, str] = {}  # controllers the kernel refused, and why
        self._fds: tuple[int, ...] = ()
        self.preexec: Callable[[], None] = _nothing
        self.removed = False

    @property
    def folders(self) -> list[Path]:
        return sorted(set(self.paths.values()))

    @property
    def fds(self) -> tuple[int, ...]:
        """The ``cgroup.procs`` descriptors ``preexec`` writes to: they stay open (in this
        process) until ``remove``, so every child started meanwhile can join."""
        return self._fds

    # -- setting up ----------------------------------------------------------------------------
    def _make(self) -> None:
        for _attempt in range(3):
            try:
                self._make_once()
                return
            except FileNotFoundError:
                # A run being removed took the shared parent folder away meanwhile: again.
                continue
        self._make_once()

    def _make_once(self) -> None:
        if self.mode == "v2" and self.support.delegate is not None:
            self._enable(self.support.delegate)  # only missing at the top (see ``_v2``)
        for folder in self.folders:
            folder.parent.mkdir(exist_ok=True)
            if self.mode == "v2":
                self._enable(folder.parent)
            if folder.exists():
                # A run of the same name that crashed left its cgroup (and maybe processes).
                log.warning("removing the leftover cgroup %s", folder)
                if not _kill_and_wait([folder], self._kill_files([folder]), EMPTY_TIMEOUT):
                    raise CgroupError(errno.EBUSY, f"processes of a previous run stay in {folder}")
                _rmdir_tree(folder)
            folder.mkdir()

    def _enable(self, cgroup: Path) -> None:
        """cgroup v2: enable the run's controllers for ``cgroup``'s children. One the kernel
        refuses (cpu, with real-time processes about) is left out; memory never is."""
        enabled = set(_read(cgroup / "cgroup.subtree_control").split())
        for controller in [c for c in self.paths if c not in enabled]:
            try:
                _write(cgroup / "cgroup.subtree_control", f"+{controller}")
            except OSError as exc:
                if controller == "memory":
                    raise
                del self.paths[controller]
                self._left_out[controller] = f"{cgroup} refused to enable it ({exc.strerror})"

    def _limit(self) -> None:
        limits, applied = self.limits, self.applied
        applied.update(mechanism=f"cgroup {self.mode}", cgroups={c: str(p) for c, p in self.paths.items()})
        not_applied = dict(self._left_out)
        for controller in CONTROLLERS:
            if controller not in self.paths and controller not in not_applied:
                not_applied[controller] = f"no usable {controller} controller ({self.support.reason})"
        memory = self.paths["memory"]
        if self.mode == "v1":
            _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting is on
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
                applied["memory_and_swap_bytes"] = limits.memory_bytes
            if (memory / "memory.swappiness").exists():
                _write(memory / "memory.swappiness", "0")
                applied["swappiness"] = 0
        else:
            _write(memory / "memory.max", str(limits.memory_bytes))
            if (memory / "memory.swap.max").exists():
                _write(memory / "memory.swap.max", "0")
                applied["swap_bytes"] = 0
        applied["memory_bytes"] = limits.memory_bytes
        quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
        cpu = self.paths.get("cpu")
        if cpu is not None:
            if self.mode == "v1" and (cpu / "cpu.cfs_quota_us").exists():
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(quota))
            elif self.mode == "v2" and (cpu / "cpu.max").exists():
                _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                cpu = None
                not_applied["cpu"] = "the kernel has no CPU bandwidth control (CONFIG_CFS_BANDWIDTH)"
        if cpu is not None:
            applied.update(cpus=limits.cpus, cpu_quota_us=quota, cpu_period_us=CPU_PERIOD_US)
        pids = self.paths.get("pids")
        if pids is not None:
            _write(pids / "pids.max", str(limits.pids))
            applied["pids"] = limits.pids
        if not_applied:
            applied["not_applied"] = not_applied

    def _open(self) -> None:
        self._fds = tuple(os.open(f / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for f in self.folders)

        # Runs in the forked child before exec: only writes to descriptors opened above (the
        # defaults bind them now, so the child looks nothing up and allocates next to nothing).
        def preexec(fds: tuple[int, ...] = self._fds, write: Any = os.write, me: bytes = b"0") -> None:
            for fd in fds:
                write(fd, me)

        self.preexec = preexec

    def _kill_files(self, folders: list[Path]) -> list[Path]:
        if self.mode != "v2":
            return []
        return [f / "cgroup.kill" for f in folders if (f / "cgroup.kill").exists()]

    # -- while it runs, and after ----------------------------------------------------------------
    def describe(self) -> str:
        """One line for the job page, e.g. "cgroup v1: 2 CPUs, 8 GiB memory, 1024 processes"."""
        parts = []
        cpus, memory, pids = _amount(self.limits)
        if "cpus" in self.applied:
            parts.append(cpus)
        parts.append(memory)
        if "pids" in self.applied:
            parts.append(pids)
        line = f"cgroup {self.mode}: " + ", ".join(parts)
        missing = self.applied.get("not_applied", {})
        if "cpu" in missing:
            line += "; no CPU limit"
        if "pids" in missing:
            line += "; no process limit"
        return line

    def oom_killed(self, returncode: int | None = None) -> bool:
        """Whether the kernel killed a process of the run for memory. On cgroup v1 kernels
        without an ``oom_kill`` count, a limit hit (``memory.failcnt``) with a SIGKILL exit
        (``returncode`` 137 or -9) counts."""
        memory = self.paths["memory"]
        if self.mode == "v2":
            return _field(_read(memory / "memory.events"), "oom_kill") > 0
        control = _read(memory / "memory.oom_control")
        if re.search(r"^oom_kill \d+", control, re.M):
            return _field(control, "oom_kill") > 0
        failed = int(_read(memory / "memory.failcnt").strip() or 0)
        return failed > 0 and returncode in (137, -signal.SIGKILL)

    def peak_memory_bytes(self) -> int | None:
        """The most memory the run used at once (None where the kernel does not say)."""
        memory = self.paths["memory"]
        raw = _read(memory / ("memory.max_usage_in_bytes" if self.mode == "v1" else "memory.peak")).strip()
        return int(raw) if raw.isdigit() else None

    def pids(self) -> set[int]:
        return set().union(*(_pids(f) for f in self.folders))

    def kill_all(self) -> bool:
        """SIGKILL every process of the run (v2: ``cgroup.kill`` where the kernel has it), and
        wait for them to be gone; False if some are still there after ``EMPTY_TIMEOUT``."""
        return _kill_and_wait(self.folders, self._kill_files(self.folders), EMPTY_TIMEOUT)

    def remove(self) -> bool:
        """Kill what is left, then remove the run's cgroups (and the shared parent folder once
        empty). Idempotent; False if processes or folders could not be removed."""
        if self.removed:
            return True
        emptied = self.kill_all()
        for fd in self._fds:
            os.close(fd)
        self._fds, self.preexec = (), _nothing
        ok = emptied
        for folder in self.folders:
            try:
                _rmdir_tree(folder)
            except OSError as exc:
                log.warning("could not remove the cgroup %s: %s", folder, exc)
                ok = False
                continue
            with contextlib.suppress(OSError):  # only succeeds once no other run uses it
                folder.parent.rmdir()
        self.removed = ok
        return ok

    def __repr__(self) -> str:
        return f"<RunCgroup {self.name}: {self.describe()}>"


def _nothing() -> None:
    pass


def _field(text: str, key: str) -> int:
    match = re.search(rf"^{re.escape(key)} (\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def create(name: str, limits: Limits, support: Support | None = None) -> RunCgroup:
    """Make the cgroup ``anyjob/<name>`` in every usable hierarchy, with ``limits``, and open
    it for children (``RunCgroup.preexec``). A leftover of a crashed run of the same name is
    killed and removed first. Raises ``CgroupError`` where cgroups are not usable
    (``detect().mode == "none"``) or cannot be set up."""
    if not NAME.fullmatch(name):
        raise ValueError(f"a run's cgroup name is letters, digits, '.', '_' and '-', not {name!r}")
    support = support or detect()
    if support.mode == "none":
        raise CgroupError(errno.ENOTSUP, f"no usable cgroups here: {support.reason}")
    run = RunCgroup(name, limits, support)
    try:
        run._make()
        run._limit()
        run._open()
    except OSError as exc:
        run.remove()
        raise CgroupError(exc.errno or errno.EIO, f"cannot set up the cgroup {name}: {exc}") from exc
    return run


# -- the last resort: resource limits -------------------------------------------------------------
class RlimitFallback:
    """``RLIMIT_AS`` and ``RLIMIT_NPROC`` set in the child before exec, for machines without
    usable cgroups; callable as a ``preexec_fn``. No CPU limit, no group to kill or measure."""

    mode = "rlimit"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # Computed here, not in the child: lowering a limit is always allowed, raising a hard one is not.
        settings = []
        for which, value in ((resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_NPROC, limits.pids)):
            hard = resource.getrlimit(which)[1]
            settings.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        self._settings = tuple(settings)
        (_, address_space), (_, processes) = self._settings
        self.applied: dict[str, Any] = {
            "mechanism": "rlimit",
            "address_space_bytes": address_space,
            "processes_per_uid": processes,
            "not_applied": {
                "cpu": "no cgroups: resource limits cannot bound CPU time per second",
                "memory": "RLIMIT_AS bounds address space, not resident memory",
            },
        }

    def __call__(self) -> None:
        for which, value in self._settings:
            resource.setrlimit(which, (value, value))

    @property
    def preexec(self) -> Callable[[], None]:
        return self

    def describe(self) -> str:
        _cpus, memory, _pids = _amount(self.limits)
        return f"resource limits (no cgroups): {memory.replace(' memory', ' address space', 1)}, " + (
            f"{self.limits.pids} processes per uid; no CPU limit"
        )

    def oom_killed(self, returncode: int | None = None) -> bool:
        return False  # an allocation past RLIMIT_AS fails (MemoryError, ENOMEM); nothing is killed

    def peak_memory_bytes(self) -> int | None:
        return None

    def pids(self) -> set[int]:
        return set()

    def kill_all(self) -> bool:
        return True  # nothing to find the processes by: the caller signals its process group

    def remove(self) -> bool:
        return True


def fallback_preexec(limits: Limits) -> RlimitFallback:
    """The last resort where ``detect().mode == "none"``: a ``preexec_fn`` that sets
    ``RLIMIT_AS`` to the memory limit and ``RLIMIT_NPROC`` to the process limit (see the
    module's docstring for what these do and do not bound); ``.applied``/``.describe()`` say so."""
    return RlimitFallback(limits)


def confine(name: str, limits: Limits, support: Support | None = None) -> RunCgroup | RlimitFallback:
    """A run's cgroup where cgroups are usable, else the resource-limit fallback (same surface:
    ``preexec``, ``applied``, ``describe``, ``oom_killed``, ``peak_memory_bytes``,
    ``kill_all``, ``remove``). A machine whose cgroups exist but fail to set up raises."""
    support = support or detect()
    if support.mode == "none":
        return fallback_preexec(limits)
    return create(name, limits, support)
