"""bench/api_first_line: ``CreateTrainingJob`` through ``/aws`` → the script's first log line.

The path existing SageMaker code takes: boto3 signs the request, the real Django app (in a
threaded WSGI server on loopback, the same view gunicorn serves) verifies it, validates it as
the form does, makes the history row and submits it synchronously through the local backend,
which starts the job in its sandbox; the clock stops when the job's first line is in its log.

Baseline, same run, same script and request: ``LocalBackend.create_training_job`` called
in-process → the same first line. The difference is what the API adds before the job starts
(target: within 200 ms). Log lines are looked for the same way in both, every 5 ms.

Run: ``make bench`` or ``.venv/bin/python bench/api_first_line.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VAR = Path(tempfile.mkdtemp(prefix="anyjob-bench-"))
(VAR / "static").mkdir()  # whitenoise's STATIC_ROOT (make run collects it; nothing is served here)
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": str(VAR),
        "ANYJOB_IMAGE_ENV_ROOT": os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(REPO / "var" / "image")),
        "DJANGO_SECRET_KEY": "bench",
        "ANYJOB_LOCAL_HEARTBEAT_SECONDS": "0.2",
        "ANYJOB_LOCAL_FILE_ROOTS": str(VAR),
        "ANYJOB_LOCAL_MAX_INSTANCES": "64",
    }
)
for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ[proxy] = "http://127.0.0.1:9"  # nothing leaves the machine
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1"
FIRST_LINE = "first line of the bench job"
SCRIPT = f"print({FIRST_LINE!r}, flush=True)\n".encode()
TARGET_MS = 200.0


def serve() -> str:
    """The Django app on a loopback port, in threads of this process; its URL."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), Quiet, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def code_uri() -> str:
    from django.conf import settings

    from jobs import storage

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(SCRIPT)
        tar.addfile(info, io.BytesIO(SCRIPT))
    uri = f"{settings.ANYJOB_ARTIFACT_STORE.rstrip('/')}/bench/source/sourcedir.tar.gz"
    storage.put_bytes(raw.getvalue(), uri)
    return uri


def request(name: str, code: str) -> dict:
    from django.conf import settings

    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "anyjob/generic:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "HyperParameters": {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": f'"{code}"'},
        "OutputDataConfig": {"S3OutputPath": f"{settings.ANYJOB_ARTIFACT_STORE.rstrip('/')}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def until_first_line(backend, name: str, started: float) -> float:
    while True:
        try:
            events = backend.get_training_logs(name)["events"]
        except Exception:  # not there yet
            events = []
        if any(FIRST_LINE in e["message"] for e in events):
            return (time.perf_counter() - started) * 1000
        if time.perf_counter() - started > 60:
            raise SystemExit(f"{name}: no first line after 60 s")
        time.sleep(0.005)


def finish(backend, name: str) -> None:
    while backend.describe_training_job(name)["TrainingJobStatus"] not in ("Completed", "Failed", "Stopped"):
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    import django

    django.setup()
    import boto3
    from botocore.config import Config
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs.awsapi.models import AccessKey
    from jobs.backends.local import image
    from jobs.backends.local.backend import LocalBackend

    call_command("migrate", verbosity=0)
    image.ensure_image_env(Path(settings.ANYJOB_IMAGE_ENV_ROOT))  # built once, not timed
    user = User.objects.create_user("bench")
    key, secret = AccessKey.create_for(user, "bench")
    sm = boto3.client(
        "sagemaker",
        endpoint_url=f"{serve()}/aws",
        region_name="us-east-1",
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )
    backend = LocalBackend()
    code = code_uri()

    def api_run() -> float:
        name = f"api-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        sm.create_training_job(**request(name, code))
        took = until_first_line(backend, name, started)
        finish(backend, name)
        return took

    def backend_run() -> float:
        name = f"direct-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        backend.create_training_job(request(name, code))
        took = until_first_line(backend, name, started)
        finish(backend, name)
        return took

    api_run(), backend_run()  # warm-up: imports, the first sandbox, the client's connection
    through_api, direct = [], []
    for _ in range(args.runs):  # alternated, so both see the same machine
        through_api.append(api_run())
        direct.append(backend_run())

    def row(label: str, values: list[float]) -> str:
        p95 = sorted(values)[max(0, round(0.95 * len(values)) - 1)]
        return f"{label:<50} {statistics.median(values):8.1f} ms {p95:8.1f} ms"

    print(f"api_first_line: {args.runs} runs each of a one-line script, 2 cores")
    print(f"{'':<50} {'median':>11} {'p95':>11}")
    print(row("boto3 CreateTrainingJob via /aws → first log line", through_api))
    print(row("baseline: LocalBackend.create_training_job → same", direct))
    added = statistics.median(through_api) - statistics.median(direct)
    ratio = statistics.median(through_api) / statistics.median(direct)
    print(f"ratio API/backend: {ratio:.2f}× ({added:+.1f} ms added by the API)")
    verdict = "PASS" if added <= TARGET_MS else "MISS"
    print(f"target: within {TARGET_MS:g} ms of the backend (median): {verdict}")


if __name__ == "__main__":
    main()
