"""One local training job's process: claim it, stage, run the container sandboxed, finish.

``python -m jobs.backends.local.executor [--detach] NAME`` — started by
``LocalBackend.create_training_job``; ``--detach`` forks into its own session so the job
outlives the web or worker process that created it, and no Celery task waits for it (a
task that long would be redelivered by Redis after ``visibility_timeout`` and run twice).

Exactly once: the process first claims the row ("update where executor is empty"); a second
process for the same job finds it claimed and exits. While it runs it writes a heartbeat
every ``ANYJOB_LOCAL_HEARTBEAT_SECONDS`` and reads the row's status, which is how it learns
of ``StopTrainingJob``. If it dies, the heartbeat stops and the backend fails the job.

The steps follow SageMaker's secondary statuses: Starting → Downloading (channels staged
into the job directory, laid out as ``/opt/ml``) → Training (the generic container's
``train`` in the sandbox, its output kept as CloudWatch-shaped log events, metrics picked
out by ``MetricDefinitions``) → Uploading (``model.tar.gz`` and ``output.tar.gz`` to
``<S3OutputPath>/<job>/output/``, for completed, stopped and failed jobs alike) → final.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("anyjob.local.executor")

#: SageMaker keeps 1024 characters of FailureReason.
FAILURE_REASON_MAX = 1024
MAX_LINE = 16 * 1024  # longer log lines are cut (CloudWatch's own limit is 256 KiB)
FLUSH_SECONDS = 0.5
FLUSH_LINES = 500
#: Passed into the sandbox when the job may use the network, so the container can read s3://.
AWS_PASSTHROUGH = re.compile(
    r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|REGION|DEFAULT_REGION|ENDPOINT_URL.*)"
)


def decode_hyperparameter(value: str) -> str:
    """A hyperparameter as the container decodes it (JSON-encoded by the SDK, or raw)."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def detach() -> None:
    """Double fork: the caller returns at once and the job's process belongs to no one."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--detach"]
    if len(args) != 1:
        print("usage: python -m jobs.backends.local.executor [--detach] TRAINING_JOB_NAME", file=sys.stderr)
        return 2
    if "--detach" in argv:
        detach()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings

    name = args[0]
    job_root = Path(settings.ANYJOB_LOCAL_ROOT) / name.lower()
    job_root.mkdir(parents=True, exist_ok=True)
    # The executor's own diagnostics (not the job's log) go next to the job directory.
    handler = logging.FileHandler(job_root.parent / f"{name.lower()}.executor.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    if "--detach" in argv:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    return Executor(name, job_root).run()


class Executor:
    def __init__(self, name: str, job_root: Path) -> None:
        self.name = name
        self.job_root = job_root
        self.ml = job_root / "ml"
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stop_requested = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()

    # -- the row -------------------------------------------------------------------------------
    def claim(self) -> bool:
        from django.utils.timezone import now

        from jobs.backends.local.models import ACTIVE, LocalTrainingJob

        claimed = LocalTrainingJob.objects.filter(
            key=self.name.lower(), executor="", status__in=ACTIVE
        ).update(executor=self.identity, heartbeat=now())
        return claimed == 1

    def update(self, **changes: Any) -> Any:
        """Change the row under a write lock; returns it. Callers pass simple field values
        or ``advance=(secondary,)`` / ``finish=(status, secondary, reason)``."""
        from django.db import transaction

        from jobs.backends.local import states
        from jobs.backends.local.models import LocalTrainingJob

        with transaction.atomic():
            job = LocalTrainingJob.objects.select_for_update().get(key=self.name.lower())
            if "advance" in changes:
                states.advance(job, *changes.pop("advance"))
            if "finish" in changes:
                states.finish(job, *changes.pop("finish"))
            for field, value in changes.items():
                setattr(job, field, value)
            job.save()
            return job

    def _heartbeat(self, period: float) -> None:
        from django.db import connection
        from django.utils.timezone import now

        from jobs.backends.local.models import LocalTrainingJob, Status

        try:
            while not self._done.wait(period):
                rows = LocalTrainingJob.objects.filter(key=self.name.lower(), executor=self.identity)
                if not rows.update(heartbeat=now()):
                    # The row is gone (deleted) or was taken from us (declared abandoned):
                    # nobody will look at this job again, so it stops at once.
                    log.warning(
                        "training job %s: its record is gone or no longer ours; killing it", self.name
                    )
                    self.lost.set()
                    self.stop_requested.set()
                    return
                if rows.filter(status=Status.STOPPING).exists():
                    self.stop_requested.set()
        finally:
            connection.close()

    # -- the job -------------------------------------------------------------------------------
    def run(self) -> int:
        from django.conf import settings

        if not self.claim():
            log.info("training job %s is not waiting for a process: nothing to do", self.name)
            return 0
        beat = threading.Thread(
            target=self._heartbeat,
            args=(settings.ANYJOB_LOCAL_HEARTBEAT_SECONDS,),
            name="heartbeat",
            daemon=True,
        )
        beat.start()
        try:
            self._run()
        except Exception as exc:  # a bug of ours or a fault of the machine: say so on the job
            log.exception("training job %s: internal error", self.name)
            from jobs.backends.local.models import Status

            reason = f"InternalServerError: {type(exc).__name__}: {exc}"[:FAILURE_REASON_MAX]
            with contextlib.suppress(Exception):  # the row itself may be what is gone
                self.update(finish=(Status.FAILED, "Failed", reason))
        finally:
            self._done.set()
            beat.join(timeout=5)
            if not os.environ.get("ANYJOB_LOCAL_KEEP_JOB_DIRS"):
                shutil.rmtree(self.job_root, ignore_errors=True)
        return 0

    def _run(self) -> None:
        from django.conf import settings
        from django.utils.timezone import now

        from jobs import storage
        from jobs.backends.local import image
        from jobs.backends.local.models import Status

        job = self.update(advance=("Downloading",), training_start_time=now())
        request: dict[str, Any] = job.request
        deadline = time.monotonic() + int(
            request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86_400)
        )
        volume = int(request.get("ResourceConfig", {}).get("VolumeSizeInGB", 30)) * 1024**3
        try:
            self.write_config(request)
            budget = min(volume, settings.ANYJOB_LOCAL_MAX_CHANNEL_BYTES)
            for channel in request.get("InputDataConfig", []):
                uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
                # Copied, not linked: the job may rewrite its input without touching the original.
                staged = storage.stage_prefix(
                    uri,
                    self.ml / "input" / "data" / channel["ChannelName"],
                    max_bytes=budget,
                    link=False,
                    role_arn=request.get("RoleArn"),
                )
                budget -= staged.bytes
        except storage.StorageError as exc:
            reason = f"ClientError: {exc}"
            self.update(finish=(Status.FAILED, "Failed", reason[:FAILURE_REASON_MAX]))
            return
        if self.stop_requested.is_set():
            self.finish_stopped("Stopped")
            return
        python = image.ensure_image_env(Path(settings.ANYJOB_IMAGE_ENV_ROOT))
        self.update(advance=("Training",))
        code, notes, stopped_by = self.train(request, python, deadline)
        if self.lost.is_set():
            return
        if notes:
            self.update(notes=notes)
        if stopped_by == "max_runtime":
            self.update(status=Status.STOPPING, stop_reason="max_runtime", advance=("Stopping",))
        self.update(advance=("Uploading",))
        metrics = self.metrics
        try:
            artifacts = self.upload(request)
        except (storage.StorageError, OSError) as exc:
            reason = f"ClientError: could not upload the training artifacts: {exc}"
            self.update(final_metrics=metrics, finish=(Status.FAILED, "Failed", reason[:FAILURE_REASON_MAX]))
            return
        if stopped_by or self.stop_requested.is_set():
            secondary = "MaxRuntimeExceeded" if stopped_by == "max_runtime" else "Stopped"
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.STOPPED, secondary, "")
            )
        elif code == 0:
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.COMPLETED, "Completed", "")
            )
        else:
            reason = self.failure_reason(code)
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.FAILED, "Failed", reason)
            )

    def finish_stopped(self, secondary: str) -> None:
        from jobs.backends.local.models import Status

        self.update(finish=(Status.STOPPED, secondary, ""))

    def write_config(self, request: dict[str, Any]) -> None:
        """The three config files exactly as SageMaker writes them."""
        config = self.ml / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        for sub in ("model", "output/data", "code", "input/data"):
            (self.ml / sub).mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        mode = request.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
        data_config = {}
        for channel in request.get("InputDataConfig", []):
            entry = {
                "TrainingInputMode": channel.get("InputMode", mode),
                "S3DistributionType": channel["DataSource"]["S3DataSource"].get(
                    "S3DataDistributionType", "FullyReplicated"
                ),
                "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            }
            if channel.get("ContentType"):
                entry["ContentType"] = channel["ContentType"]
            data_config[channel["ChannelName"]] = entry
        (config / "inputdataconfig.json").write_text(json.dumps(data_config))
        instance_type = request["ResourceConfig"]["InstanceType"]
        hosts = ["algo-1"]
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": "algo-1",
                    "current_instance_type": instance_type,
                    "current_group_name": "homogeneousCluster",
                    "hosts": hosts,
                    "instance_groups": [
                        {
                            "instance_group_name": "homogeneousCluster",
                            "instance_type": instance_type,
                            "hosts": hosts,
                        }
                    ],
                    "network_interface_name": "eth0",
                }
            )
        )

    def sandbox_env(self, request: dict[str, Any], job_arn: str) -> dict[str, str]:
        from django.conf import settings

        from jobs.backends.local import image

        env = {**image.IMAGE_ENV, **request.get("Environment", {})}
        env["TRAINING_JOB_NAME"] = self.name
        env["TRAINING_JOB_ARN"] = job_arn
        env["ANYJOB_STOP_GRACE_SECONDS"] = f"{settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS:g}"
        if not request.get("EnableNetworkIsolation"):
            # The role's credentials, as SageMaker gives a job its execution role's.
            env.update({k: v for k, v in os.environ.items() if AWS_PASSTHROUGH.fullmatch(k)})
        return env

    def train(self, request: dict[str, Any], python: Path, deadline: float) -> tuple[int, list[str], str]:
        """Run ``train`` in the sandbox; returns (exit code, notes, "" | "user" | "max_runtime")."""
        from django.conf import settings

        from jobs import storage
        from jobs.backends.local import image, sandbox
        from jobs.backends.local.models import LocalTrainingJob

        job = LocalTrainingJob.objects.get(key=self.name.lower())
        expose = list(image.runtime_paths(python))
        code_uri = decode_hyperparameter(
            request.get("HyperParameters", {}).get("sagemaker_submit_directory", "")
        )
        if code_uri.startswith("file://"):
            expose.append(storage.parse(code_uri).path)
        spec = sandbox.Sandbox(
            job_dir=self.ml,
            argv=[str(python), "-m", "anyjob_container", "train"],
            env=self.sandbox_env(request, job.arn),
            network=not request.get("EnableNetworkIsolation", False),
            # The project's state (database, sockets, artifacts, other jobs) and the home
            # folder (credentials) are invisible inside; only what the job needs shows.
            hide=[Path(settings.VAR_DIR), Path(settings.ANYJOB_LOCAL_ROOT), Path.home()],
            expose_ro=expose,
            scratch_dir=self.job_root / "tmp",
        )
        proc = sandbox.SandboxedProcess.start(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        notes = [] if proc.isolated else [proc.note]
        logs = LogWriter(job, f"{self.name}/algo-1-{int(time.time())}", request)
        if notes:
            logs.add(f"anyjob: {notes[0]}")
        pump = threading.Thread(target=logs.pump, args=(proc.stdout,), name="log-pump", daemon=True)
        pump.start()
        stopped_by = ""
        grace = settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS
        kill_at = None
        while proc.wait(timeout=0.2) is None:
            logs.flush_if_due()  # a quiet script's last lines still show within a second
            if self.lost.is_set():
                proc.kill()
                continue
            if not stopped_by:
                if self.stop_requested.is_set():
                    stopped_by = "user"
                elif time.monotonic() > deadline:
                    stopped_by = "max_runtime"
                if stopped_by:
                    proc.terminate()
                    kill_at = time.monotonic() + grace
            elif kill_at is not None and time.monotonic() > kill_at:
                proc.kill()
                kill_at = None
        pump.join(timeout=10)
        logs.close()
        self.metrics = logs.final_metrics()
        return proc.returncode, notes, stopped_by

    def upload(self, request: dict[str, Any]) -> str:
        """Pack model/ and output/data/ and store them; returns the model.tar.gz URI."""
        from jobs import storage

        prefix = request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{self.name}/output"
        packed = self.job_root / "packed"
        packed.mkdir(exist_ok=True)
        for src, name in (
            (self.ml / "model", "model.tar.gz"),
            (self.ml / "output" / "data", "output.tar.gz"),
        ):
            src.mkdir(parents=True, exist_ok=True)
            # inside=: a script that swaps model/ for a link to a host folder gets nothing of it.
            storage.upload_file(storage.pack_dir(src, packed / name, inside=self.ml), f"{prefix}/{name}")
        return f"{prefix}/model.tar.gz"

    def failure_reason(self, code: int) -> str:
        failure = self.ml / "output" / "failure"
        try:
            text = failure.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        reason = f"AlgorithmError: {text}" if text else f"AlgorithmError: Exit Code: {code}"
        return reason[:FAILURE_REASON_MAX]


class LogWriter:
    """Keeps a job's output as log events, in batches, bounded, and picks out metrics."""

    def __init__(self, job: Any, stream: str, request: dict[str, Any]) -> None:
        from django.conf import settings

        self.job = job
        self.stream = stream
        self.max_events = settings.ANYJOB_LOCAL_MAX_LOG_EVENTS
        self.pending: list[tuple[int, str]] = []
        self.seq = 0
        self.lock = threading.Lock()
        self.last_flush = time.monotonic()
        definitions = request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        self.metric_res: list[tuple[str, re.Pattern[str]]] = []
        for d in definitions:
            try:
                self.metric_res.append((d["Name"], re.compile(d["Regex"])))
            except re.error:
                log.warning(
                    "metric %s: regex %r does not compile in Python; ignored", d.get("Name"), d.get("Regex")
                )
        self.metrics: dict[str, tuple[float, int]] = {}

    def add(self, line: str) -> None:
        stamp = int(time.time() * 1000)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + " [... line cut by anyjob ...]"
        for metric, pattern in self.metric_res:
            match = pattern.search(line)
            if match:
                with contextlib.suppress(ValueError, IndexError):
                    self.metrics[metric] = (
                        float(match.group(1) if match.groups() else match.group(0)),
                        stamp,
                    )
        with self.lock:
            self.pending.append((stamp, line))
        if len(self.pending) >= FLUSH_LINES:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def pump(self, stream: Any) -> None:
        from django.db import connection

        try:
            for raw in iter(stream.readline, b""):
                self.add(raw.decode("utf-8", "replace").rstrip("\n"))
            self.flush()
        finally:
            connection.close()

    def flush(self) -> None:
        from jobs.backends.local.models import LocalLogEvent

        with self.lock:
            batch, self.pending = self.pending, []
            self.last_flush = time.monotonic()
            if not batch:
                return
            ingested = int(time.time() * 1000)
            events = []
            for stamp, message in batch:
                self.seq += 1
                events.append(
                    LocalLogEvent(
                        job=self.job,
                        seq=self.seq,
                        stream=self.stream,
                        timestamp=stamp,
                        ingestion_time=ingested,
                        message=message,
                    )
                )
            LocalLogEvent.objects.bulk_create(events, batch_size=500)
            # Bounded: beyond max_events, the oldest go (the dashboard shows the tail).
            if self.seq > self.max_events:
                LocalLogEvent.objects.filter(job=self.job, seq__lte=self.seq - self.max_events).delete()

    def close(self) -> None:
        self.flush()

    def final_metrics(self) -> list[dict[str, Any]]:
        from datetime import UTC, datetime

        return [
            {
                "MetricName": name,
                "Value": value,
                "Timestamp": datetime.fromtimestamp(stamp / 1000, UTC).isoformat(),
            }
            for name, (value, stamp) in sorted(self.metrics.items())
        ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
