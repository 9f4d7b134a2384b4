"""An instance's resources: the instance-type table, and real cgroups (or resource limits)
holding a process to them. Every hostile process here is bounded in size and time."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import botocore.loaders
import pytest

from jobs.backends.local import instances, resources
from jobs.backends.local.resources import Limits

SUPPORT = resources.detect()
needs_cgroups = pytest.mark.skipif(
    SUPPORT.mode == "none", reason=f"this machine offers no usable cgroups: {SUPPORT.reason}"
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
MIB = 1024**2
#: A Python another uid may run (the venv's lives under root's home here).
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def run(args: list[str], timeout: float = 30, **popen) -> subprocess.CompletedProcess:
    """Run a short Python program; the test fails (never hangs) past ``timeout``."""
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def cgroup():
    """Makes run cgroups named for this test, and removes every one of them afterwards."""
    made: list[resources.RunCgroup] = []

    def make(limits: Limits, name: str | None = None) -> resources.RunCgroup:
        made.append(resources.create(name or f"test-{uuid.uuid4().hex[:12]}", limits))
        return made[-1]

    yield make
    for run_cgroup in made:
        assert run_cgroup.remove(), f"{run_cgroup.name} could not be removed"
        assert not any(p.exists() for p in run_cgroup.folders)


# -- the table --------------------------------------------------------------------------------
def test_every_type_in_the_table_is_one_sagemaker_knows_with_sane_numbers() -> None:
    shapes = botocore.loaders.create_loader().load_service_model("sagemaker", "service-2")["shapes"]
    known = set(shapes["TrainingInstanceType"]["enum"]) | set(shapes["ProductionVariantInstanceType"]["enum"])
    raw = json.loads(instances.TABLE.read_text())
    assert "EC2" in raw["source"] and "botocore" in raw["source"]
    assert len(raw["types"]) >= 150
    for name, spec in raw["types"].items():
        assert name in known, f"{name} is not a SageMaker instance type"
        assert set(spec) == {"vcpus", "memory_gib", "gpus", "accelerator"}, name
        assert isinstance(spec["vcpus"], int) and 1 <= spec["vcpus"] <= 448, name
        assert 1 <= spec["memory_gib"] / spec["vcpus"] <= 32, name  # GiB per vCPU: c-family to x-family
        assert 0 <= spec["gpus"] <= 16 and (spec["gpus"] == 0) == (spec["accelerator"] is None), name
    # The families the emulator is asked for most, training and hosting.
    for family in ("t2", "t3", "m5", "m5d", "m6i", "m7i", "c5", "c5n", "c6i", "c7i", "r5", "r6i"):
        assert any(n.startswith(f"ml.{family}.") for n in raw["types"]), family
    for family in ("p3", "p4d", "p5", "g4dn", "g5", "g6", "g6e", "trn1", "inf1", "inf2"):
        assert any(n.startswith(f"ml.{family}.") for n in raw["types"]), family


def test_lookup_gives_the_published_specification() -> None:
    m5 = instances.lookup("ml.m5.large")
    assert (m5.vcpus, m5.memory_bytes, m5.gpus, m5.accelerator) == (2, 8 * 1024**3, 0, None)
    p4d = instances.lookup("ml.p4d.24xlarge")
    assert (p4d.vcpus, p4d.memory_gib, p4d.gpus, p4d.accelerator) == (96, 1152, 8, "NVIDIA A100 40GB")
    assert instances.lookup("ml.c5n.xlarge").memory_gib == 10.5
    assert instances.lookup("ml.g6e.48xlarge").memory_gib == 1536
    assert instances.lookup("ml.inf2.48xlarge").gpus == 12
    assert instances.lookup("ml.nope.large") is None
    assert instances.lookup("ml.m5.large") is m5  # read once


def test_limits_come_from_the_instance_type_and_unknown_types_are_refused() -> None:
    limits = resources.limits_for(instances.lookup("ml.c5.2xlarge"), max_pids=500)
    assert limits == Limits(cpus=8.0, memory_bytes=16 * 1024**3, pids=500)
    assert resources.instance_type_problem("ml.m5.large") is None
    problem = resources.instance_type_problem("ml.p5e.48xlarge")
    assert "'ml.p5e.48xlarge'" in problem and "instance_types.json" in problem


def test_the_default_capacity_follows_cores_and_memory() -> None:
    cores = len(os.sched_getaffinity(0))
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024**3
    assert resources.default_max_instances() == max(1, min(cores, memory_gib // 2))


# -- what the machine offers --------------------------------------------------------------------
def mountinfo(*mounts: tuple[Path, str, str]) -> str:
    lines = [
        f"{30 + i} 23 0:{30 + i} / {point} rw,relatime - {fstype} {fstype} rw{',' + opts if opts else ''}"
        for i, (point, fstype, opts) in enumerate(mounts)
    ]
    return "\n".join(lines) + "\n"


def test_detect_skips_a_cgroup2_mount_without_controllers_for_writable_v1(tmp_path) -> None:
    # This machine's shape: v1 memory, cpu and pids, and a cgroup2 mount with nothing in it.
    for name in ("memory", "cpu", "pids", "unified"):
        (tmp_path / name / "service").mkdir(parents=True)
    (tmp_path / "unified" / "cgroup.controllers").write_text("\n")
    info = mountinfo(
        (tmp_path / "cpu", "cgroup", "cpu"),
        (tmp_path / "memory", "cgroup", "memory"),
        (tmp_path / "pids", "cgroup", "pids"),
        (tmp_path / "unified", "cgroup2", ""),
    )
    support = resources.detect(info, "8:pids:/\n4:memory:/service\n1:cpu:/\n0::/\n")
    assert support.mode == "v1"
    assert support.parents == {
        "memory": tmp_path / "memory" / "service" / "anyjob",  # inside our own cgroup
        "cpu": tmp_path / "cpu" / "anyjob",
        "pids": tmp_path / "pids" / "anyjob",
    }


def test_detect_prefers_delegated_cgroup2(tmp_path) -> None:
    root = tmp_path / "cg2"
    (root / "system.slice" / "anyjob.service").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (root / "system.slice" / "cgroup.subtree_control").write_text("memory pids\n")
    (root / "system.slice" / "anyjob.service" / "cgroup.subtree_control").write_text("")
    info = mountinfo((root, "cgroup2", "nsdelegate"), (tmp_path / "memory", "cgroup", "memory"))
    support = resources.detect(info, "0::/system.slice/anyjob.service\n")
    # The nearest cgroup that enables memory for its children: the service's slice (no cpu there).
    assert support.mode == "v2"
    assert support.parents == {
        "memory": root / "system.slice" / "anyjob",
        "pids": root / "system.slice" / "anyjob",
    }
    assert "no cpu controller" in support.reason


def test_detect_says_why_when_nothing_is_usable(tmp_path) -> None:
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("\n")
    support = resources.detect(mountinfo((tmp_path / "unified", "cgroup2", "")), "0::/\n")
    assert support.mode == "none"
    assert "delegates no memory controller" in support.reason
    assert "no cgroup v1 memory hierarchy is mounted" in support.reason
    with pytest.raises(resources.CgroupError):
        resources.create("test-nothing", Limits(1, 64 * MIB, 50), support)
    assert isinstance(
        resources.confine("test-nothing", Limits(1, 64 * MIB, 50), support), resources.RlimitFallback
    )


# -- real cgroups --------------------------------------------------------------------------------
ALLOCATE = "b = bytearray({size}); b[::4096] = b'x' * len(b[::4096]); print('allocated', flush=True)"


@needs_cgroups
def test_a_process_past_its_memory_is_oom_killed_and_that_is_known(cgroup) -> None:
    run_cgroup = cgroup(Limits(cpus=1, memory_bytes=64 * MIB, pids=50))
    assert run_cgroup.applied["memory_bytes"] == 64 * MIB
    started = time.monotonic()
    result = run([ALLOCATE.format(size=200 * MIB)], preexec_fn=run_cgroup.preexec)
    assert result.returncode == -9 and "allocated" not in result.stdout
    assert run_cgroup.oom_killed(result.returncode)
    peak = run_cgroup.peak_memory_bytes()
    assert peak is None or 32 * MIB < peak <= 64 * MIB
    assert time.monotonic() - started < 10


@needs_cgroups
def test_a_process_within_its_memory_is_not_reported_oom(cgroup) -> None:
    run_cgroup = cgroup(Limits(cpus=1, memory_bytes=256 * MIB, pids=50))
    result = run([ALLOCATE.format(size=64 * MIB)], preexec_fn=run_cgroup.preexec)
    assert result.returncode == 0 and "allocated" in result.stdout
    assert not run_cgroup.oom_killed(result.returncode)


FORK_BOMB = """
import os, time
made = refused = 0
for _ in range(300):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        break
    if pid == 0:
        os.closerange(1, 3)  # the test reads the bomb's output to its end, not the children's
        time.sleep(20)
        os._exit(0)
    made += 1
print(made, refused, flush=True)
"""


@needs_cgroups
def test_a_fork_bomb_stops_at_the_process_limit_and_kill_all_ends_it(cgroup) -> None:
    run_cgroup = cgroup(Limits(cpus=1, memory_bytes=512 * MIB, pids=50))
    if "pids" not in run_cgroup.applied:
        pytest.skip(f"no pids controller here: {SUPPORT.reason}")
    result = run([FORK_BOMB], preexec_fn=run_cgroup.preexec)
    made, refused = map(int, result.stdout.split())
    assert refused == 1 and made == 49  # the bomb itself is the 50th
    # Its children outlive it, still in the cgroup, until kill_all.
    assert len(run_cgroup.pids()) == 49
    started = time.monotonic()
    assert run_cgroup.kill_all() and run_cgroup.pids() == set()
    assert time.monotonic() - started < 5


@needs_cgroups
def test_the_cpu_quota_is_written_and_holds(cgroup) -> None:
    run_cgroup = cgroup(Limits(cpus=0.25, memory_bytes=256 * MIB, pids=50))
    if "cpus" not in run_cgroup.applied:
        pytest.skip(f"no cpu controller here: {SUPPORT.reason}")
    cpu = run_cgroup.paths["cpu"]
    if run_cgroup.mode == "v1":
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    else:
        assert (cpu / "cpu.max").read_text().split() == ["25000", "100000"]
    # Spinning for 1 s of wall time gets at most a quarter of a CPU (plus a period of slack).
    busy = "import time\nend = time.monotonic() + 1\nwhile time.monotonic() < end: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", busy], preexec_fn=run_cgroup.preexec)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    assert usage.ru_utime + usage.ru_stime < 0.25 + 0.15


@needs_cgroups
def test_the_child_joins_before_exec_even_after_a_uid_change_and_keeps_no_descriptor(cgroup) -> None:
    run_cgroup = cgroup(Limits(cpus=1, memory_bytes=256 * MIB, pids=50))
    probe = "import os; print(open('/proc/self/cgroup').read()); print(sorted(os.listdir('/proc/self/fd')))"
    extra = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    result = run([probe], preexec_fn=run_cgroup.preexec, close_fds=True, **extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for controller in run_cgroup.paths:
        prefix = "0::" if run_cgroup.mode == "v2" else f":{controller}:"
        line = next(li for li in lines if prefix in li)
        assert line.endswith(f"/anyjob/{run_cgroup.name}"), (controller, line)
    # Only stdin, stdout, stderr and the listing's own descriptor: the cgroup.procs ones stay here.
    assert result.stdout.splitlines()[-1] == "['0', '1', '2', '3']"
    assert all(os.fstat(fd) for fd in run_cgroup.fds)


@needs_cgroups
def test_a_leftover_of_a_crashed_run_of_the_same_name_is_cleaned_up(cgroup) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    first = resources.create(name, Limits(cpus=1, memory_bytes=256 * MIB, pids=50))
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=first.preexec)
    for fd in first.fds:  # the run's process crashed: nobody removes its cgroup
        os.close(fd)
    second = cgroup(Limits(cpus=2, memory_bytes=128 * MIB, pids=60), name=name)
    assert orphan.wait(timeout=5) == -9
    assert second.pids() == set() and second.applied["pids"] == 60
    assert second.describe() == f"cgroup {SUPPORT.mode}: 2 CPUs, 128 MiB memory, 60 processes"


@needs_cgroups
def test_the_shared_parent_goes_with_the_last_run() -> None:
    one = resources.create(f"test-{uuid.uuid4().hex[:12]}", Limits(cpus=1, memory_bytes=64 * MIB, pids=50))
    two = resources.create(f"test-{uuid.uuid4().hex[:12]}", Limits(cpus=1, memory_bytes=64 * MIB, pids=50))
    parents = {f.parent for f in one.folders}
    assert one.remove() and one.remove()  # idempotent
    assert all(p.exists() for p in parents) and all(f.exists() for f in two.folders)
    assert two.remove()
    assert not any(f.exists() for f in two.folders)  # the parents too, unless another run uses them


# -- the last resort -------------------------------------------------------------------------------
LIMITS_PROBE = "import resource as r; print(r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_NPROC)[0])"


def test_the_resource_limit_fallback_bounds_memory_and_says_so() -> None:
    fallback = resources.fallback_preexec(Limits(cpus=2, memory_bytes=512 * MIB, pids=64))
    hard_as = resource.getrlimit(resource.RLIMIT_AS)[1]
    assert fallback.applied["address_space_bytes"] == (
        512 * MIB if hard_as == resource.RLIM_INFINITY else min(512 * MIB, hard_as)
    )
    assert fallback.applied["mechanism"] == "rlimit" and "cpu" in fallback.applied["not_applied"]
    assert (
        fallback.describe()
        == "resource limits (no cgroups): 512 MiB address space, 64 processes per uid; no CPU limit"
    )
    limits = run([LIMITS_PROBE], preexec_fn=fallback.preexec)
    assert limits.stdout.split() == [str(512 * MIB), "64"]
    # Past the address space, an allocation fails inside the program (nothing is killed).
    result = run([ALLOCATE.format(size=1024 * MIB)], preexec_fn=fallback.preexec)
    assert result.returncode == 1 and "MemoryError" in result.stderr
    assert not fallback.oom_killed(result.returncode)


@needs_root
def test_the_resource_limit_fallback_stops_a_fork_bomb_of_its_own_uid() -> None:
    # A uid of its own, as each job has: RLIMIT_NPROC counts that uid's processes machine-wide.
    uid = 60000 + uuid.uuid4().int % 5000
    fallback = resources.fallback_preexec(Limits(cpus=1, memory_bytes=1024 * MIB, pids=20))
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", FORK_BOMB],
        stdout=subprocess.PIPE,
        text=True,
        user=uid,
        group=uid,
        extra_groups=[],
        preexec_fn=fallback.preexec,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=30)
        made, refused = map(int, out.split())
        assert refused == 1 and made == 19  # the bomb itself is the 20th process of its uid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its children sleep on in its process group
