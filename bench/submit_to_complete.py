"""bench/submit_to_complete: from the new-job form's POST to ``Completed`` in the database.

The whole path a user's click takes, with real parts: the form POST (through Django's test
client: upload, bundle, store, validate, create the row, enqueue on commit), the embedded
redis-server, a real Celery worker (``submit_job``) and beat (``poll_jobs`` every 2 s), the
local backend running the trivial example in its sandbox, and the poller storing Completed.

Baseline, same run: the same script through the local backend alone (``create_training_job``
→ ``Completed`` seen by describe), i.e. what the dashboard's machinery adds on top of the
emulator. Target: ≤ 3 s from POST to Completed.

Run: ``make bench`` or ``.venv/bin/python bench/submit_to_complete.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VAR = Path(tempfile.mkdtemp(prefix="anyjob-bench-"))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": str(VAR),
        "ANYJOB_IMAGE_ENV_ROOT": os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(REPO / "var" / "image")),
        "DJANGO_SECRET_KEY": "bench",
        "ANYJOB_LOCAL_HEARTBEAT_SECONDS": "0.2",
        "ANYJOB_LOCAL_FILE_ROOTS": str(VAR),  # the baseline's code and outputs live in the bench's folder
    }
)
SCRIPT = b"print('hello from a trivial training job')\n"
TARGET_SECONDS = 3.0


def start_services(logs: Path) -> list[subprocess.Popen]:
    from django.conf import settings

    from tests import servers
    from webapp.run import redis_answers, redis_config, redis_server_binary

    socket = Path(settings.ANYJOB_REDIS_SOCKET)
    socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = VAR / "redis.conf"
    conf.write_text(redis_config(VAR / "redis", socket).replace("appendonly yes", "appendonly no"))
    redis_log = open(logs / "redis.log", "wb")  # noqa: SIM115 - lives as long as the process
    children = [servers.start([str(redis_server_binary()), str(conf)], cwd=VAR, stdout=redis_log)]
    deadline = time.monotonic() + 20
    while not redis_answers(socket):
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    celery = str(Path(sys.executable).parent / "celery")
    for role, extra in [
        ("worker", ["--pool=threads", "--concurrency=2"]),
        ("beat", ["--schedule", str(VAR / "celerybeat-schedule")]),
    ]:
        out = open(logs / f"{role}.log", "wb")  # noqa: SIM115 - lives as long as the process
        children.append(
            servers.start(
                [celery, "-A", "webapp", role, "--loglevel=WARNING", *extra],
                cwd=REPO,
                env=dict(os.environ),
                stdout=out,
                stderr=out,
            )
        )
    return children


def wait_for_worker() -> None:
    from webapp.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if app.send_task("jobs.tasks.ping").get(timeout=2) == "pong":
                return
        except Exception:  # not up yet
            time.sleep(0.2)
    raise SystemExit("the Celery worker did not answer")


def through_the_dashboard(client) -> float:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs.models import TrainingJob

    name = f"bench-{uuid.uuid4().hex[:8]}"
    data = {
        "name": name,
        "entry_point": "train.py",
        "instance_type": "ml.m5.large",
        "instance_count": "1",
        "volume_size_gb": "1",
        "max_runtime_seconds": "600",
        "code": SimpleUploadedFile("train.py", SCRIPT),
    }
    for prefix in ("ch", "hp", "env", "tag"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    started = time.perf_counter()
    response = client.post("/new/", data)
    if response.status_code != 302:
        raise SystemExit(f"the form refused the job: {response.content.decode()[-2000:]}")
    while True:
        status = TrainingJob.objects.filter(name=name).values_list("status", flat=True).first()
        if status in TrainingJob.FINAL:
            break
        if time.perf_counter() - started > 120:
            raise SystemExit(f"{name} still {status} after 120 s")
        time.sleep(0.02)
    took = time.perf_counter() - started
    if status != "Completed":
        raise SystemExit(f"{name} ended {status}")
    return took


def through_the_backend(code: Path) -> float:
    from jobs.backends.local.backend import LocalBackend
    from tests.local.jobs import training_request

    backend = LocalBackend()
    name = f"direct-{uuid.uuid4().hex[:8]}"
    output = VAR / "artifacts" / "direct"
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    backend.create_training_job(training_request(name, code, "train.py", output))
    while backend.describe_training_job(name)["TrainingJobStatus"] not in ("Completed", "Failed", "Stopped"):
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from jobs.backends.local import image

    call_command("migrate", verbosity=0)
    image.ensure_image_env(settings.ANYJOB_IMAGE_ENV_ROOT)  # built once, not timed
    logs = VAR / "logs"
    logs.mkdir()
    children = start_services(logs)
    try:
        wait_for_worker()
        user = User.objects.create_user("bench")
        client = Client(SERVER_NAME="127.0.0.1")  # in ALLOWED_HOSTS
        client.force_login(user)
        code = VAR / "direct-code"
        code.mkdir()
        (code / "train.py").write_bytes(SCRIPT)
        through_the_dashboard(client)  # warm-up: imports, first bundle, first sandbox
        through_the_backend(code)
        dashboard, direct = [], []
        for _ in range(args.runs):
            dashboard.append(through_the_dashboard(client))
            direct.append(through_the_backend(code))
    finally:
        from tests import servers

        for child in reversed(children):
            servers.stop(child)

    def row(label: str, values: list[float]) -> str:
        p95 = sorted(values)[max(0, round(0.95 * len(values)) - 1)]
        return f"{label:<46} {statistics.median(values):7.2f} s {p95:7.2f} s {max(values):7.2f} s"

    print(f"submit_to_complete: {args.runs} runs of a one-line script, 2 cores")
    print(f"{'':<46} {'median':>9} {'p95':>9} {'max':>9}")
    print(row("form POST → Completed in the database", dashboard))
    print(row("baseline: local backend create → Completed", direct))
    ratio = statistics.median(dashboard) / statistics.median(direct)
    added = statistics.median(dashboard) - statistics.median(direct)
    what = "form, Redis, worker, beat's poll interval"
    print(f"ratio dashboard/backend: {ratio:.2f}× ({added:+.2f} s: {what})")
    verdict = "PASS" if max(dashboard) <= TARGET_SECONDS else "MISS"
    print(f"target ≤ {TARGET_SECONDS:g} s for every run: {verdict} (max {max(dashboard):.2f} s)")


if __name__ == "__main__":
    main()
