"""bench/local_job_overhead: what the local backend adds to a trivial training job.

Measures, for the same one-line script, in the same run:
- ``create_training_job`` → the script's first line, and → ``Completed`` seen by describe;
- the script run directly with ``python`` (start → first line, start → exit).
Targets: ≤ 0.5 s of overhead before the script starts, ≤ 1.5 s in total. (SageMaker itself
takes minutes to start an instance; the SDK's local mode needs Docker.)

Then what each layer of the sandbox costs, each against the same start of ``/bin/true``
without that layer, in the same run: the uid switch with its user namespace (``setpriv`` +
``--unshare-user --disable-userns`` against bubblewrap as root), anyjob's whole launcher
(staging, memfd arguments, hand-over), the network namespace with pasta and its routes
(against network isolation), the job's cgroups, and its disk volume (a loop-mounted ext4
against a plain folder).

Run: ``make bench`` or ``.venv/bin/python bench/local_job_overhead.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VAR = tempfile.mkdtemp(prefix="anyjob-bench-")
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": VAR,
        "ANYJOB_IMAGE_ENV_ROOT": str(REPO / "var" / "image"),
        "DJANGO_SECRET_KEY": "bench",
        "ANYJOB_LOCAL_FILE_ROOTS": VAR,  # the bench's job outputs live in its own folder
    }
)

SCRIPT = (
    "import time, os\nT = time.time()\nopen(os.environ['SM_MODEL_DIR'] + '/first-line', 'w').write(repr(T))\n"
)


def first_line_from_model(uri: str) -> float:
    path = Path(urlparse(uri).path)
    with tarfile.open(path) as tf:
        return float(tf.extractfile("first-line").read())


def run_local(backend, code: Path, output: Path) -> tuple[float, float]:
    from tests.local.jobs import training_request

    name = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.time()
    backend.create_training_job(training_request(name, code, "first.py", output))
    while True:
        job = backend.describe_training_job(name)
        if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.01)
    total = time.time() - start
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return first_line_from_model(job["ModelArtifacts"]["S3ModelArtifacts"]) - start, total


def run_direct(code: Path, model_dir: Path) -> tuple[float, float]:
    start = time.time()
    subprocess.run(
        [sys.executable, "first.py"], cwd=code, env={**os.environ, "SM_MODEL_DIR": str(model_dir)}, check=True
    )
    total = time.time() - start
    return float((model_dir / "first-line").read_text()) - start, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command

    from jobs.backends.local import image
    from jobs.backends.local.backend import LocalBackend

    call_command("migrate", verbosity=0)
    from django.conf import settings

    image.ensure_image_env(Path(settings.ANYJOB_IMAGE_ENV_ROOT))  # built once, outside the timing
    work = Path(VAR) / "work"
    code = work / "code"
    code.mkdir(parents=True)
    (code / "first.py").write_text(SCRIPT)
    model_dir = work / "model"
    model_dir.mkdir()
    backend = LocalBackend()
    run_local(backend, code, work / "out")  # warm-up
    local_first, local_total, direct_first, direct_total = [], [], [], []
    for _ in range(args.runs):
        first, total = run_local(backend, code, work / "out")
        local_first.append(first)
        local_total.append(total)
        first, total = run_direct(code, model_dir)
        direct_first.append(first)
        direct_total.append(total)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    before = ms(local_first) - ms(direct_first)
    overall = ms(local_total) - ms(direct_total)
    print(f"local_job_overhead: median of {args.runs} runs (ms)")
    print(f"  python first.py directly:   first line {ms(direct_first):7.1f}   total {ms(direct_total):7.1f}")
    print(f"  local backend job:          first line {ms(local_first):7.1f}   total {ms(local_total):7.1f}")
    print(
        f"  overhead before the script: {before:7.1f} ms  ({ms(local_first) / ms(direct_first):.1f}x direct)"
        f"  target <= 500 ms: {'met' if before <= 500 else 'MISSED'}"
    )
    print(
        f"  overhead in total:          {overall:7.1f} ms  ({ms(local_total) / ms(direct_total):.1f}x direct)"
        f"  target <= 1500 ms: {'met' if overall <= 1500 else 'MISSED'}"
    )
    notes = backend.job_notes(backend.list_training_jobs()["TrainingJobSummaries"][0]["TrainingJobName"])
    sandbox = "NO sandbox" if any(n.startswith("ran without isolation") for n in notes) else "the sandbox"
    print(f"  (jobs ran in {sandbox}; {'; '.join(notes)})")
    layers(args.runs)


def _median_ms(fn, runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def layers(runs: int) -> None:
    import shutil as sh

    from jobs.backends.local import resources, sandbox, volume

    if sandbox.isolation_problem() is not None or sandbox.sandbox_mode() == "off":
        print(f"layers: skipped ({sandbox.isolation_problem() or 'ANYJOB_SANDBOX=off'})")
        return
    runs = max(runs, 10)
    work = Path(VAR) / "layers"
    job = work / "ml"
    job.mkdir(parents=True)
    bwrap = sandbox.bwrap_path() or "bwrap"
    base = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-ipc"]
    base += ["--unshare-net", "--cap-drop", "ALL", "--", "/bin/true"]
    lease = sandbox.UidLease.take()

    def run(argv: list[str]) -> None:
        subprocess.run(argv, env=sandbox.HELPER_ENV, check=True)

    def start(spec: sandbox.Sandbox) -> None:
        proc = sandbox.SandboxedProcess.start(spec)
        assert proc.wait(timeout=30) == 0

    as_root = _median_ms(lambda: run([bwrap, *base]), runs)
    drop = [*sandbox._drop_privileges(lease.uid), bwrap, "--unshare-user", "--disable-userns", *base]
    as_uid = _median_ms(lambda: run(drop), runs)
    lease.release()
    isolated = sandbox.Sandbox(job_dir=job, argv=["/bin/true"], network=False)
    full_isolated = _median_ms(lambda: start(isolated), runs)
    online = sandbox.Sandbox(job_dir=job, argv=["/bin/true"], network=True)
    networked = _median_ms(lambda: start(online), runs)
    limits = resources.Limits(cpus=2.0, memory_bytes=8 * 1024**3, pids=1024)

    def with_cgroup() -> None:
        confined = resources.confine("bench-layers", limits)
        try:
            start(sandbox.Sandbox(job_dir=job, argv=["/bin/true"], network=False, preexec=confined.preexec))
        finally:
            confined.remove()

    cgroup = _median_ms(with_cgroup, runs)

    def plain_folder() -> None:
        (work / "plain" / "ml").mkdir(parents=True)
        sh.rmtree(work / "plain")

    def loop_volume() -> None:
        made = volume.Volume.create(work / "vol", 30 * 1024**3)
        (made.path / "ml").mkdir()
        made.release()

    folder = _median_ms(plain_folder, runs)
    disk = _median_ms(loop_volume, runs)
    print(f"layers: median of {runs} starts of /bin/true (ms), each against the same without the layer")
    rows = [
        ("uid switch + user namespace", as_uid, as_root, "bwrap as root"),
        ("anyjob's launcher (isolated)", full_isolated, as_uid, "setpriv + bwrap"),
        ("network namespace + pasta", networked, full_isolated, "network isolation"),
        ("cgroups (memory, cpu, pids)", cgroup, full_isolated, "no cgroup"),
        ("disk volume (ext4 on loop)", disk, folder, "a plain folder"),
    ]
    for label, with_it, without, baseline in rows:
        print(
            f"  {label:30s} {with_it:7.1f} vs {without:7.1f} ({baseline}): +{with_it - without:6.1f} ms"
            f"  ({with_it / without:.2f}x)"
        )


if __name__ == "__main__":
    main()
