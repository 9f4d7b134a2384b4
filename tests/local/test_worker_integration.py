"""The whole data flow with real processes: Redis, a Celery worker and beat, the local backend.

A job is enqueued on commit, a worker submits it, beat drives the poller, and the database
ends up Completed — nothing called directly.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from jobs.models import TrainingJob
from jobs.tasks import enqueue_submit
from tests import servers
from tests.local.test_tasks import EXAMPLES, code_files, linear_job, make_job
from webapp.run import redis_answers, redis_config, redis_server_binary

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
BIN = Path(sys.executable).parent


@pytest.fixture
def celery_processes(tmp_path: Path, image_python: Path) -> Iterator[None]:
    # The socket where settings look for it, so this process and the children agree.
    socket = Path(settings.ANYJOB_REDIS_SOCKET)
    socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = tmp_path / "redis.conf"
    conf.write_text(redis_config(tmp_path, socket).replace("appendonly yes", "appendonly no"))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "ANYJOB_VAR_DIR": str(settings.VAR_DIR)}
    logs = tmp_path / "logs"
    logs.mkdir()
    children = []
    try:
        children.append(servers.start([str(redis_server_binary()), str(conf)], cwd=tmp_path))
        deadline = time.monotonic() + 20
        while not redis_answers(socket):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        celery = str(BIN / "celery")
        for role, extra in [
            ("worker", ["--pool=threads", "--concurrency=2"]),
            ("beat", ["--schedule", str(tmp_path / "celerybeat-schedule")]),
        ]:
            out = open(logs / f"{role}.log", "wb")  # noqa: SIM115 - closed with the process
            children.append(
                servers.start(
                    [celery, "-A", "webapp", role, "--loglevel=INFO", *extra],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=out,
                    stderr=out,
                )
            )
        yield
    finally:
        for child in reversed(children):
            servers.stop(child)
        for log in logs.glob("*.log"):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def wait_final(job: TrainingJob, timeout: float = 90) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.status in TrainingJob.FINAL:
            return job
        assert time.monotonic() < deadline, f"{job.name} still {job.status}/{job.secondary_status}"
        time.sleep(0.3)


def test_jobs_enqueued_on_commit_reach_completed_and_failed(celery_processes) -> None:
    owner = User.objects.create_user("bob", password="x")
    with transaction.atomic():
        job = linear_job(owner)
        enqueue_submit(job)
        failing = make_job(owner, code_files(EXAMPLES / "failing"), "failing")
        enqueue_submit(failing)
    job = wait_final(job)
    assert job.status == TrainingJob.Status.COMPLETED, job.failure_reason or job.error
    assert job.submitted_at is not None and job.model_artifacts
    assert [t["Status"] for t in job.transitions][-1] == "Completed"
    failing = wait_final(failing)
    assert failing.status == TrainingJob.Status.FAILED
    assert failing.failure_reason.startswith("AlgorithmError: ")
    assert failing.failure_text.strip().splitlines()[-1].startswith("FileNotFoundError: ")
