"""One local training job's process: stage, run the container sandboxed, record, finish.

``python -m jobs.backends.local.executor [--detach] PLAN_FILE`` — started by
``launch.launch_executor`` (for ``LocalBackend.create_training_job``), which writes the plan
(the request and the settings this process needs) in the job directory. ``--detach``
(``launch.detach``) forks into its own session so the job outlives the web or worker process
that created it, and no Celery task waits for it (a task that long would be redelivered by
Redis after ``visibility_timeout`` and run twice).

Fast start: Django takes about half a second to import here, so the job does not wait for
it. The process first stages the channels and starts the container from the plan alone,
then sets Django up while the container starts, and only then claims the job's row and
records what already happened, with the times it happened at. Output that arrives before
the row is claimed is kept in memory until it can be written.

Exactly once: only ``create_training_job`` starts this process, and it claims the job
twice — a lock file in the job directory before anything runs, and the row ("update where
executor is empty") before anything is recorded; losing either ends it. While it runs it
writes a heartbeat every ``ANYJOB_LOCAL_HEARTBEAT_SECONDS`` and reads the row's status,
which is how it learns of ``StopTrainingJob``. If it dies, the heartbeat stops and the
backend fails the job; if the row vanishes or is taken from it, it kills the job and ends.

The steps follow SageMaker's secondary statuses: Starting → Downloading (channels staged
into the job directory, laid out as ``/opt/ml``) → Training (the generic container's
``train`` in the sandbox, its output kept as CloudWatch-shaped log events, metrics picked
out by ``MetricDefinitions``) → Uploading (``model.tar.gz`` and ``output.tar.gz`` to
``<S3OutputPath>/<job>/output/``, for completed, stopped and failed jobs alike) → final.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.backends.local.launch import detach
from jobs.backends.local.logs import LogWriter

log = logging.getLogger("anyjob.local.executor")

#: SageMaker keeps 1024 characters of FailureReason.
FAILURE_REASON_MAX = 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


CLAIM_FILE = "claimed"


def executor_gone(job_root: Path) -> bool:
    """Whether the job's process (on this machine) has ended: its claim is no longer held."""
    try:
        fd = os.open(Path(job_root) / CLAIM_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def cgroup_name(key: str, job_root: Path) -> str:
    """The job's cgroup (``anyjob/<this>`` in each hierarchy). Named by this installation's
    job folder too: cgroups are the machine's, and another anyjob here (another checkout, a
    test run) may have a job of the same name."""
    where = hashlib.sha256(str(Path(job_root).resolve()).encode()).hexdigest()[:10]
    return f"job-{key}-{where}"


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--detach"]
    if len(args) != 1:
        print("usage: python -m jobs.backends.local.executor [--detach] PLAN_FILE", file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    job_root = Path(plan["job_root"])
    if "--detach" in argv:
        detach()
    # The process's own diagnostics (not the job's log) go next to the job directory.
    handler = logging.FileHandler(job_root.parent / f"{job_root.name}.executor.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        # Held (flock) for as long as this process lives: the reaper tells a dead executor
        # by the lock being free, the moment the kernel closes it.
        claimed = os.open(job_root / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC)
    except FileExistsError:
        log.info("training job %s already has a process: nothing to do", plan["name"])
        return 0
    fcntl.flock(claimed, fcntl.LOCK_EX)
    run = JobRun(plan)
    try:
        run.start()
        os.environ["DJANGO_SETTINGS_MODULE"] = plan["django_settings"]
        import django

        django.setup()
        return run.finish()
    finally:
        run.cleanup()


def claim(key: str, identity: str) -> bool:
    """Take the job's row for ``identity`` if no process has it; True when taken."""
    from django.utils.timezone import now

    from jobs.backends.local.models import ACTIVE, LocalTrainingJob

    taken = LocalTrainingJob.objects.filter(key=key, executor="", status__in=ACTIVE).update(
        executor=identity, heartbeat=now()
    )
    return taken == 1


class JobRun:
    """One job, from its plan: ``start()`` needs no Django, ``finish()`` does."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.request: dict[str, Any] = plan["request"]
        self.name: str = plan["name"]
        self.key: str = plan["key"]
        self.job_root = Path(plan["job_root"])
        # On the job's volume (volume.py) once ``start`` has made it: /opt/ml and /tmp.
        self.ml = self.job_root / "volume" / "ml"
        self.tmp = self.job_root / "volume" / "tmp"
        self.volume: Any = None
        self.confinement: Any = None
        self.instance_type: str = self.request["ResourceConfig"]["InstanceType"]
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stop_requested = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self.proc: Any = None
        self.notes: list[str] = []
        self.early_failure = ""
        self.staged_code: Path | None = None  # an s3:// code bundle fetched for the container
        self.downloading_at = utcnow()
        self.training_at: datetime | None = None
        limit = int(self.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86_400))
        self.deadline = time.monotonic() + limit
        self.logs = LogWriter(
            f"{self.name}/algo-1-{int(time.time())}",
            plan["max_log_events"],
            flush_on_add=True,
            metric_definitions=self.request.get("AlgorithmSpecification", {}).get("MetricDefinitions", []),
        )

    # -- before Django ---------------------------------------------------------------------------
    def start(self) -> None:
        """Stage the channels and start the container; a failure is kept for ``finish``."""
        from jobs import storage
        from jobs.backends.local import contract, image, roles, sandbox

        for note in contract.notes(self.request, self.plan.get("training_image", "")):
            self.notes.append(note)
            self.logs.add(f"anyjob: {note}")
        try:
            self.prepare_instance()
        except (sandbox.SandboxError, OSError) as exc:
            self.early_failure = f"InternalServerError: could not prepare the instance: {exc}"
            return
        try:
            self.write_config()
            budget = min(
                int(self.request["ResourceConfig"].get("VolumeSizeInGB", 30)) * 1024**3,
                self.plan["max_channel_bytes"],
            )
            for channel in self.request.get("InputDataConfig", []):
                # Copied, not linked: the job may rewrite its input without touching the original.
                staged = storage.stage_prefix(
                    channel["DataSource"]["S3DataSource"]["S3Uri"],
                    self.ml / "input" / "data" / channel["ChannelName"],
                    max_bytes=budget,
                    link=False,
                    role_arn=self.request.get("RoleArn"),
                    credentials=roles.storage_credentials(
                        self.request.get("RoleArn"), channel["DataSource"]["S3DataSource"]["S3Uri"]
                    ),
                )
                budget -= staged.bytes
            self.stage_code()
        except storage.StorageError as exc:
            self.early_failure = f"ClientError: {exc}"
            return
        try:
            python = image.ensure_image_env(Path(self.plan["image_env_root"]))
            self.proc = sandbox.SandboxedProcess.start(
                self.sandbox_spec(python), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except (sandbox.SandboxError, image.ImageEnvError) as exc:
            self.early_failure = f"InternalServerError: {exc}"
            return
        self.training_at = utcnow()
        for note in self.proc.notes:
            self.notes.append(note)
            self.logs.add(f"anyjob: {note}")
        threading.Thread(
            target=self.logs.pump, args=(self.proc.stdout,), name="log-pump", daemon=True
        ).start()

    def stage_code(self) -> None:
        """An ``s3://`` ``sagemaker_submit_directory`` of the embedded S3, which the sandbox
        cannot reach: fetched here into the job's folder (``code_staging``), for the container
        to read through ``sandbox_spec``'s exposed file. ``StorageError`` when it cannot be."""
        from anyjob_container.environment import decode_value
        from jobs.backends.local import code_staging

        uri = decode_value((self.request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
        if code_staging.needs_staging(uri):
            limit = code_staging.max_bytes(self.plan["max_channel_bytes"])
            self.staged_code = code_staging.stage(uri, self.job_root, limit)
            self.logs.add(f"anyjob: fetched the code {uri} for the container")

    def prepare_instance(self) -> None:
        """The instance the job runs on: its volume (``VolumeSizeInGB`` on disk, holding
        ``/opt/ml`` and ``/tmp``) and its instance type's CPUs, memory and a process limit
        (``resources.py``). What was applied is recorded on the job (``notes``)."""
        from jobs.backends.local import resources, volume

        size = int(self.request["ResourceConfig"].get("VolumeSizeInGB", 30)) * 1024**3
        self.volume = volume.Volume.create(self.job_root, size)
        for folder in (self.ml, self.tmp):
            folder.mkdir(mode=0o700, exist_ok=True)
        kind = resources.instances.lookup(self.instance_type)
        if kind is None:
            raise OSError(resources.instance_type_problem(self.instance_type) or self.instance_type)
        limits = resources.limits_for(kind, max_pids=int(self.plan.get("max_processes", 1024)))
        self.confinement = resources.confine(cgroup_name(self.key, self.job_root), limits)
        applied = f"{self.instance_type}: {self.confinement.describe()}; {self.volume.applied}"
        self.notes.append(f"instance {applied}")

    def write_config(self) -> None:
        """The three config files exactly as SageMaker writes them."""
        request = self.request
        config = self.ml / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        for sub in ("model", "output/data", "code", "input/data"):
            (self.ml / sub).mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
        mode = request.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
        data_config = {}
        for channel in request.get("InputDataConfig", []):
            source = channel["DataSource"]["S3DataSource"]
            entry = {
                "TrainingInputMode": channel.get("InputMode", mode),
                "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
                "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            }
            if channel.get("ContentType"):
                entry["ContentType"] = channel["ContentType"]
            data_config[channel["ChannelName"]] = entry
        (config / "inputdataconfig.json").write_text(json.dumps(data_config))
        instance_type = request["ResourceConfig"]["InstanceType"]
        group = {
            "instance_group_name": "homogeneousCluster",
            "instance_type": instance_type,
            "hosts": ["algo-1"],
        }
        resource = {
            "current_host": "algo-1",
            "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster",
            "hosts": ["algo-1"],
            "instance_groups": [group],
            "network_interface_name": "eth0",
        }
        (config / "resourceconfig.json").write_text(json.dumps(resource))

    def sandbox_spec(self, python: Path) -> Any:
        from anyjob_container.environment import decode_value
        from jobs import storage
        from jobs.backends.local import contract, image, roles, sandbox

        request = self.request
        env = {**image.IMAGE_ENV, **request.get("Environment", {})}
        env["TRAINING_JOB_NAME"] = self.name
        env["TRAINING_JOB_ARN"] = self.plan["arn"]
        env["ANYJOB_STOP_GRACE_SECONDS"] = f"{self.plan['stop_grace_seconds']:g}"
        # The role's credentials (none when isolated or unmapped), as SageMaker gives a job its
        # execution role's; never the server's own. The request's Environment wins, as on AWS.
        isolated = bool(request.get("EnableNetworkIsolation"))
        env = {**roles.job_environment(request.get("RoleArn"), isolated=isolated), **env}
        expose = list(image.runtime_paths(python))
        code_uri = decode_value(request.get("HyperParameters", {}).get("sagemaker_submit_directory", ""))
        if isinstance(code_uri, str) and code_uri.startswith("file://"):
            expose.append(storage.parse(code_uri).path)
        if self.staged_code is not None:  # set last: the request's Environment cannot move it
            from jobs.backends.local import code_staging

            expose.append(self.staged_code)
            env[code_staging.STAGED_VAR] = self.staged_code.as_uri()
        return sandbox.Sandbox(
            job_dir=self.ml,
            # train, or ContainerEntrypoint + ContainerArguments (SDK v3's driver): the same
            # sandbox either way, with the image's python, pip and bin/ first on PATH.
            argv=contract.container_command(request, python),
            image_bin=python.parent,
            pip_target_env=contract.overrides_command(request),
            env=env,
            network=not request.get("EnableNetworkIsolation", False),
            # The project's state (database, sockets, artifacts, other jobs) and the home
            # folder (credentials) are invisible inside; only what the job needs shows.
            hide=[Path(p) for p in self.plan["hide"]],
            expose_ro=expose,
            scratch_dir=self.tmp,
            tmp_dir=self.tmp,
            preexec=self.confinement.preexec if self.confinement is not None else None,
        )

    # -- with Django -----------------------------------------------------------------------------
    def update(self, **changes: Any) -> Any:
        """Change the row under a write lock; returns it. ``advance=(secondary, at)`` and
        ``finish=(status, secondary, reason)`` move its status, other keys set fields."""
        from django.db import transaction

        from jobs.backends.local import states
        from jobs.backends.local.models import LocalTrainingJob

        with transaction.atomic():
            job = LocalTrainingJob.objects.select_for_update().get(key=self.key)
            if "advance" in changes:
                states.advance(job, *changes.pop("advance"))
            if "finish" in changes:
                states.finish(job, *changes.pop("finish"))
            for field, value in changes.items():
                setattr(job, field, value)
            job.save()
            return job

    def finish(self) -> int:
        from jobs.backends.local.models import LocalLogEvent, LocalTrainingJob, Status

        if not claim(self.key, self.identity):
            log.info("training job %s is not waiting for a process: nothing to do", self.name)
            if self.proc is not None:
                self.proc.kill()
            return 0
        beat = threading.Thread(target=self._heartbeat, args=(self.plan["heartbeat_seconds"],), daemon=True)
        beat.start()
        try:
            self.update(advance=("Downloading", self.downloading_at), training_start_time=self.downloading_at)
            if self.early_failure:
                self.update(finish=(Status.FAILED, "Failed", self.early_failure[:FAILURE_REASON_MAX]))
                return 0
            job = self.update(advance=("Training", self.training_at), notes=self.notes)
            if isinstance(job, LocalTrainingJob):
                self.logs.attach(LocalLogEvent, {"job": job})
            self._train_and_upload()
        except Exception as exc:  # a bug of ours or a fault of the machine: say so on the job
            log.exception("training job %s: internal error", self.name)
            reason = f"InternalServerError: {type(exc).__name__}: {exc}"[:FAILURE_REASON_MAX]
            with contextlib.suppress(Exception):  # the row itself may be what is gone
                self.update(finish=(Status.FAILED, "Failed", reason))
        finally:
            self._done.set()
            beat.join(timeout=5)
        return 0

    def _heartbeat(self, period: float) -> None:
        from django.db import connection
        from django.utils.timezone import now

        from jobs.backends.local.models import LocalTrainingJob, Status

        try:
            while not self._done.wait(period):
                rows = LocalTrainingJob.objects.filter(key=self.key, executor=self.identity)
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

    def _train_and_upload(self) -> None:
        from jobs import storage
        from jobs.backends.local.models import Status

        code, stopped_by = self.wait_for_container()
        if self.lost.is_set():
            return
        if stopped_by == "max_runtime":
            self.update(status=Status.STOPPING, stop_reason="max_runtime", advance=("Stopping",))
        self.update(advance=("Uploading",))
        metrics = self.logs.final_metrics()
        try:
            artifacts = self.upload()
        except (storage.StorageError, OSError) as exc:
            reason = f"ClientError: could not upload the training artifacts: {exc}"
            self.update(final_metrics=metrics, finish=(Status.FAILED, "Failed", reason[:FAILURE_REASON_MAX]))
            return
        if stopped_by:
            secondary = "MaxRuntimeExceeded" if stopped_by == "max_runtime" else "Stopped"
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.STOPPED, secondary, "")
            )
        elif code == 0:
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.COMPLETED, "Completed", "")
            )
        else:
            reason = self.out_of_memory(code) or self.failure_reason(code)
            self.update(
                model_artifacts=artifacts, final_metrics=metrics, finish=(Status.FAILED, "Failed", reason)
            )

    def wait_for_container(self) -> tuple[int, str]:
        """Until the container exits; returns (exit code, "" | "user" | "max_runtime").

        A stop (or the max runtime) sends SIGTERM to the container, which forwards it to the
        script; after the grace period everything in the sandbox is killed.
        """
        proc = self.proc
        stopped_by = ""
        kill_at = None
        while proc.wait(timeout=0.2) is None:
            self.logs.flush_if_due()  # a quiet script's last lines still show within a second
            if self.lost.is_set():
                proc.kill()
                continue
            if not stopped_by:
                if self.stop_requested.is_set():
                    stopped_by = "user"
                elif time.monotonic() > self.deadline:
                    stopped_by = "max_runtime"
                if stopped_by:
                    proc.terminate()
                    kill_at = time.monotonic() + self.plan["stop_grace_seconds"]
            elif kill_at is not None and time.monotonic() > kill_at:
                proc.kill()
                kill_at = None
        self.logs.wait_for_end()
        if not stopped_by and self.stop_requested.is_set():
            stopped_by = "user"  # asked while the container was finishing: SageMaker says Stopped
        return proc.returncode, stopped_by

    def upload(self) -> str:
        """Pack model/ and output/data/ and store them; returns the model.tar.gz URI."""
        from jobs import storage
        from jobs.backends.local import roles

        prefix = self.request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{self.name}/output"
        packed = self.job_root / "packed"
        packed.mkdir(exist_ok=True)
        volume = int(self.request["ResourceConfig"].get("VolumeSizeInGB", 30)) * 1024**3
        shown_skips = 100  # per archive, in the log; the rest are counted
        try:
            for src, name in (
                (self.ml / "model", "model.tar.gz"),
                (self.ml / "output" / "data", "output.tar.gz"),
            ):
                # The job's tree is read as hostile data (storage.pack_dir): links out, FIFOs,
                # devices, hard links and mounts are left out, each noted in the log; inside=:
                # a script that swaps model/ for a link to a host folder gets nothing of it. No
                # mkdir: through such a link it would make a folder on this machine, and a
                # missing folder packs as an empty archive anyway.
                where = src.relative_to(self.ml).as_posix()
                skipped: list[storage.Skipped] = []
                try:
                    archive = storage.pack_dir(
                        src, packed / name, inside=self.ml, max_bytes=volume, skipped=skipped
                    )
                except storage.StorageError as exc:  # in the job's words, not this machine's paths
                    raise type(exc)(str(exc).replace(str(self.ml), "/opt/ml")) from None
                finally:
                    for note in skipped[:shown_skips]:
                        self.logs.add(f"anyjob: skipped {where}/{note}")
                    if len(skipped) > shown_skips:
                        more = len(skipped) - shown_skips
                        self.logs.add(f"anyjob: skipped {more} more entries of {where}/ (not listed)")
                storage.upload_archive(
                    archive,
                    f"{prefix}/{name}",
                    credentials=roles.storage_credentials(self.request.get("RoleArn"), prefix),
                )
        finally:
            self.logs.flush()
        return f"{prefix}/model.tar.gz"

    def failure_reason(self, code: int) -> str:
        from jobs.backends.local import readback

        # Read as hostile data: a link there (to var/secret_key, say) is not followed, a FIFO
        # or device not opened, only noted. SageMaker keeps 1024 characters; 64 KiB holds them.
        try:
            read = readback.read_file(self.ml, "output/failure", 64 * 1024)
        except OSError:  # the job directory itself is gone
            read = readback.Result(None, missing=True)
        if read.data is None and not read.missing:
            self.logs.add(f"anyjob: the failure file was not read: {read.reason}")
            self.logs.flush()
        text = (read.data or b"").decode("utf-8", errors="replace").strip()
        reason = f"AlgorithmError: {text}" if text else f"AlgorithmError: Exit Code: {code}"
        return reason[:FAILURE_REASON_MAX]

    def out_of_memory(self, code: int) -> str:
        """SageMaker's reason when the job was killed for memory (its cgroup says so), or ""."""
        if self.confinement is None or not self.confinement.oom_killed(code):
            return ""
        from jobs.backends.local import resources

        kind = resources.instances.lookup(self.instance_type)
        memory = f"{kind.memory_bytes / 1024**3:g} GiB" if kind else "its"
        return (
            "OutOfMemoryError: Please use an instance type with more memory, or reduce the size of "
            f"job data processed on an instance. (anyjob: the job used all of {self.instance_type}'s "
            f"{memory} of memory and was stopped by the kernel.)"
        )[:FAILURE_REASON_MAX]

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.confinement is not None:
            self.confinement.remove()  # kills whatever is left in the job's cgroup
        if not os.environ.get("ANYJOB_LOCAL_KEEP_JOB_DIRS"):
            if self.volume is not None:
                self.volume.release()
            shutil.rmtree(self.job_root / "packed", ignore_errors=True)
            shutil.rmtree(self.job_root / "staged-code", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
