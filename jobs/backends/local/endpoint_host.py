"""One local endpoint's host process: the container's ``serve``, sandboxed, kept serving.

``python -m jobs.backends.local.endpoint_host [--detach] PLAN_FILE`` — started by
``launch.launch_endpoint_host`` (for ``LocalBackend.create_endpoint``, and for ``reattach.py``
when an endpoint's host is gone), which writes the plan (the endpoint's model and the settings
this process needs) into the endpoint's folder. ``--detach`` (``launch.detach``) forks into
its own session, so the endpoint outlives the web or worker process that created it and a
restart of those never touches it.

What it does, as SageMaker's hosting does for one instance:

1. Takes the endpoint folder's lock (``host.lock``, held until this process dies: on this
   machine, "the lock is free" means "no host", which is how ``reattach_endpoints`` tells a
   dead host at once), then claims the row for its ``generation``; losing either ends it.
2. Downloads the model's ``ModelDataUrl`` (``s3://`` or ``file://``, via ``jobs.storage``)
   and unpacks it into ``ml/model`` (``/opt/ml/model`` inside), refusing hostile archives
   whole: absolute names, ``..``, links leaving the folder, device files.
3. Starts ``python -m anyjob_container serve`` from the image environment in the bubblewrap
   sandbox, with the model's ``PrimaryContainer.Environment`` (``SAGEMAKER_PROGRAM``,
   ``SAGEMAKER_SUBMIT_DIRECTORY``: the container fetches the code itself) plus
   ``SAGEMAKER_BIND_TO_PORT`` = a free port and ``ANYJOB_BIND_HOST=127.0.0.1``. The sandbox
   shares the machine's network namespace (the server must be reachable on 127.0.0.1), and
   the server dies with this process (bubblewrap's ``--die-with-parent``): never orphaned.
   Its output becomes the endpoint's log (stream ``AllTraffic/i-…``).
4. Polls ``GET /ping``: 200 → ``InService`` with the port recorded; 500 → ``Failed`` at once
   with the container's one-line reason (``ModelLoadError: …``, ``ImportModuleError: …``:
   the container answers so only when the model can never load); no 200 within
   ``ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS`` or the server exiting first → ``Failed``. Each
   reason ends with the server's last log lines.
5. Heartbeats, and watches the row: ``Deleting`` (``DeleteEndpoint``) → SIGTERM to the
   server (gunicorn lets the requests in flight finish), SIGKILL after the grace period,
   then the row and the folder are removed. A row that vanished or was taken over by a
   newer generation → the server is stopped the same way, and the row left alone. A server
   that dies while in service is restarted (with backoff); the endpoint stays ``InService``
   with no port meanwhile (invocations get ``ServiceUnavailable``).

No Django before the lock is taken: the plan holds what the first steps need.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import posixpath
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from jobs.backends.local.executor import FAILURE_REASON_MAX
from jobs.backends.local.launch import detach
from jobs.backends.local.logs import LogWriter

log = logging.getLogger("anyjob.local.endpoint")

LOCK_FILE = "host.lock"
PLAN_FILE = "plan.json"
#: How long a starting host waits for the lock (a prober holds it for microseconds).
LOCK_WAIT_SECONDS = 2.0
#: How often the row is read (and at most how long a DeleteEndpoint waits to be noticed).
WATCH_SECONDS = 0.25
PING_TIMEOUT = 2.0  # the contract: /ping answers within 2 s
TAIL_LINES = 15  # the server's last log lines quoted in FailureReason
PORT_ATTEMPTS = 3  # a free port taken by someone else between our check and the bind
RESTART_BACKOFF_MAX = 30.0
PORT_TAKEN = (
    "The model server could not listen on 127.0.0.1: every free port it was given was taken meanwhile."
)
#: Limits for model.tar.gz once unpacked (model archives may be large, but not unbounded).
MODEL_MAX_MEMBERS = 200_000
MODEL_MAX_BYTES = 200 * 1024**3


class ModelDataError(Exception):
    """The model data could not be fetched or unpacked: ``str()`` is the FailureReason."""


# -- the lock: "is a host alive for this endpoint on this machine?" ------------------------------


def cgroup_name(key: str, root: Path) -> str:
    """The cgroup of endpoint ``key``'s host whose folder is ``root`` (``_endpoints/<key>-<uid>``)."""
    return f"endpoint-{key}-{root.name}"


def lock_is_held(root: Path) -> bool:
    """Whether a live process on this machine holds the endpoint folder's host lock.

    Exact and immediate (the kernel drops a dead process's ``flock``), unlike a heartbeat.
    """
    try:
        fd = os.open(Path(root) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no folder or no lock file: no host ever ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases our shared lock, if we got it
    return False


def take_lock(root: Path, wait: float = LOCK_WAIT_SECONDS) -> int | None:
    """The lock's fd, held exclusively (inherited across ``detach``), or None if a live host
    holds it. The server is started with ``close_fds``, so it never holds it."""
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)


# -- the model archive ----------------------------------------------------------------------------


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        return f"member {member.name!r} has an absolute path"
    if ".." in name.split("/"):
        return f"member {member.name!r} would land outside the model folder"
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            return f"link {member.name!r} points to the absolute path {target!r}"
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"link {member.name!r} points outside the model folder ({target!r})"
    elif not (member.isreg() or member.isdir()):
        return f"member {member.name!r} is a device file or FIFO"
    return None


def extract_model(archive: Path, dest: Path, shown_as: str) -> int:
    """Check every member of ``archive`` (a .tar.gz), then unpack it into ``dest``; returns
    the number of members. Raises ``ModelDataError`` (nothing written) for a hostile or
    unreadable archive."""
    refused = (
        f'ClientError: Failed to extract model data archive from URL "{shown_as}". '
        "Please ensure that the object located at the URL is a valid tar.gz archive"
    )
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            while (member := tar.next()) is not None:
                problem = _member_problem(member)
                if problem:
                    raise ModelDataError(f"{refused}: {problem}; refusing the archive")
                total += member.size if member.isreg() else 0
                if len(members) >= MODEL_MAX_MEMBERS or total > MODEL_MAX_BYTES:
                    raise ModelDataError(
                        f"{refused}: it holds more than {MODEL_MAX_MEMBERS} members or "
                        f"{MODEL_MAX_BYTES} bytes; refusing the archive"
                    )
                members.append(member)
            # The stdlib's "data" filter refuses the same things again, and drops odd modes.
            tar.extractall(dest, members=members, filter="data")
    except ModelDataError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelDataError(f"{refused}: {exc}") from None
    return len(members)


# -- small helpers --------------------------------------------------------------------------------


#: The folder (on the host: ``<endpoint>/run-<generation>``) where the model server makes its
#: unix socket, and the socket's name. It is reachable only through this folder, which only
#: anyjob (root) and the endpoint's own uid can enter: no other job or local user connects.
SOCKET_DIR_INSIDE = "/run/anyjob"
SOCKET_NAME = "model.sock"
#: The port the server would listen on in a SageMaker container; recorded as the endpoint's
#: ``port`` (a marker that it serves: the socket is where it is reached).
CONTRACT_PORT = 8080


def socket_path(root: Path, generation: int) -> Path:
    """Where the model server of the endpoint folder ``root``'s ``generation`` listens."""
    return Path(root) / f"run-{generation}" / SOCKET_NAME


def connect_unix(sock: socket.socket, path: str) -> None:
    """``sock.connect(path)``, also for a path longer than a unix address holds (108 bytes):
    through ``/proc/self/fd`` of its opened folder."""
    if len(os.fsencode(path)) < 100:
        sock.connect(path)
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
    finally:
        os.close(folder)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a model server's unix socket."""

    def __init__(self, path: str | Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            connect_unix(sock, self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def ping(path: str | Path) -> tuple[int | None, bytes, str]:
    """``GET /ping``: (status, body, the answering worker's pid or ""), or (None, b"", "")
    when nothing answers (yet)."""
    conn = UnixHTTPConnection(path, timeout=PING_TIMEOUT)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        return response.status, response.read(4096), response.getheader("X-Anyjob-Worker") or ""
    except (OSError, http.client.HTTPException):
        return None, b"", ""
    finally:
        conn.close()


def ping_reason(body: bytes) -> str:
    """The container's one-line reason from a /ping answer (``{"error": "..."}``)."""
    text = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(text)["error"])
    return text or "no reason given"


def failure(reason: str, tail: list[str]) -> str:
    """``reason`` then the last log lines, within FailureReason's 1,024 characters (the
    reason is kept whole; the oldest lines go first)."""
    reason = reason[:FAILURE_REASON_MAX]
    lines = [line[-300:] for line in tail if line.strip()]
    while lines:
        text = f"{reason} Last log lines:\n" + "\n".join(lines)
        if len(text) <= FAILURE_REASON_MAX:
            return text
        lines.pop(0)
    return reason


# -- the host ---------------------------------------------------------------------------------------


class Lost(Exception):
    """The row is gone or belongs to a newer host: stop at once, touch nothing."""


class Host:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.name: str = plan["name"]
        self.key: str = plan["key"]
        self.generation: int = plan["generation"]
        self.root = Path(plan["root"])
        # On the endpoint's volume (volume.py), made by ``prepare_instance``.
        self.ml = self.root / "volume" / "ml"
        self.tmp = self.root / "volume" / "tmp"
        self.volume: Any = None
        self.confinement: Any = None
        self.socket_dir = socket_path(self.root, self.generation).parent
        self.container: dict[str, Any] = plan["model"].get("PrimaryContainer") or {}
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stop_requested = threading.Event()
        self.proc: Any = None
        self.pump_ended = threading.Event()
        self.endpoint_id: int | None = None
        self.notes: list[str] = []
        self.variant: str = plan["variant"]
        # Written by the main thread alone (``flush_if_due`` in its loops).
        self.logs = LogWriter(
            f"{self.variant}/i-{secrets.token_hex(9)[:17]}",
            plan["max_log_events"],
            flush_on_add=False,
            tail_lines=TAIL_LINES,
        )
        self._next_watch = 0.0
        self.lost = threading.Event()
        self.done = threading.Event()
        self.staged_code: Path | None = None  # an s3:// code bundle fetched for the server

    # -- the row ------------------------------------------------------------------------------
    def _mine(self) -> Any:
        from jobs.backends.local.models import LocalEndpoint

        return LocalEndpoint.objects.filter(key=self.key, generation=self.generation, host=self.identity)

    def claim(self) -> bool:
        """Take the row for this generation; False if it is gone or a newer host has it."""
        from django.utils.timezone import now

        from jobs.backends.local.models import EndpointStatus, LocalEndpoint

        rows = LocalEndpoint.objects.filter(key=self.key, generation=self.generation).exclude(
            status=EndpointStatus.FAILED
        )
        taken = rows.update(host=self.identity, machine=socket.gethostname(), heartbeat=now())
        if taken != 1:
            return False
        self.endpoint_id = rows.values_list("pk", flat=True).first()
        return self.endpoint_id is not None

    def heartbeat(self) -> None:
        """A thread: the heartbeat, also while the main thread downloads a large model."""
        from django.db import connection
        from django.utils.timezone import now

        try:
            while not self.done.wait(self.plan["heartbeat_seconds"]):
                try:
                    if not self._mine().update(heartbeat=now()):
                        self.lost.set()  # the row is gone or a newer host has it
                        return
                except Exception:  # the database is busy or away for a moment: try again
                    log.exception("endpoint %s: heartbeat failed", self.name)
        finally:
            connection.close()

    def watch(self, force: bool = False) -> str:
        """The row's status when due ("deleting" or ""). Raises ``Lost``."""
        from jobs.backends.local.models import EndpointStatus

        if self.lost.is_set():
            raise Lost
        clock = time.monotonic()
        if not force and clock < self._next_watch:
            return ""
        self._next_watch = clock + min(WATCH_SECONDS, self.plan["heartbeat_seconds"])
        status = self._mine().values_list("status", flat=True).first()
        if status is None:
            raise Lost
        return "deleting" if status == EndpointStatus.DELETING else ""

    def set_ready(self, port: int, server_pid: int | None) -> None:
        from django.db import transaction
        from django.utils.timezone import now

        from jobs.backends.local.models import SERVING, EndpointStatus

        with transaction.atomic():
            row = self._mine().select_for_update().first()
            if row is None:
                raise Lost
            if row.status not in SERVING:
                return  # Deleting meanwhile: the next watch() sees it
            if row.status != EndpointStatus.IN_SERVICE:
                row.status = EndpointStatus.IN_SERVICE
                row.last_modified_time = now()
            row.port, row.server_pid = port, server_pid
            row.notes = self.notes
            row.save(update_fields=["status", "last_modified_time", "port", "server_pid", "notes"])

    def set_unavailable(self) -> None:
        self._mine().update(port=None, server_pid=None)

    def fail(self, reason: str) -> None:
        from django.utils.timezone import now

        from jobs.backends.local.models import SERVING, EndpointStatus

        log.warning("endpoint %s failed: %s", self.name, reason)
        self._mine().filter(status__in=SERVING).update(
            status=EndpointStatus.FAILED,
            failure_reason=reason[:FAILURE_REASON_MAX],
            port=None,
            server_pid=None,
            last_modified_time=now(),
            notes=self.notes,
        )

    def leave(self) -> bool:
        """Give the row up on the way out; a ``Deleting`` row is removed. True if removed."""
        from django.db import transaction

        from jobs.backends.local.models import EndpointStatus

        with transaction.atomic():
            row = self._mine().select_for_update().first()
            if row is None:
                return False
            if row.status == EndpointStatus.DELETING:
                row.delete()
                return True
            # launched_at cleared: no host is on its way either (see reattach.host_alive).
            row.host, row.heartbeat, row.launched_at, row.port, row.server_pid = "", None, None, None, None
            row.save(update_fields=["host", "heartbeat", "launched_at", "port", "server_pid"])
        return False

    # -- the model server --------------------------------------------------------------------------
    def prepare_instance(self) -> None:
        """The instance: a volume (the variant's ``VolumeSizeInGB``, 30 GiB by default) that
        holds ``/opt/ml`` and ``/tmp``, and the instance type's CPUs, memory and a process
        limit (``resources.py``), recorded in ``notes``."""
        from jobs.backends.local import resources, volume

        size = int(self.plan.get("volume_gb") or 30) * 1024**3
        self.volume = volume.Volume.create(self.root, size)
        kind = resources.instances.lookup(self.plan.get("instance_type") or "")
        if kind is None:
            kind = resources.instances.lookup("ml.m5.large")  # serverless: a small instance's
        limits = resources.limits_for(kind, max_pids=int(self.plan.get("max_processes", 1024)))
        self.confinement = resources.confine(cgroup_name(self.key, self.root), limits)
        self.notes.append(f"instance {kind.name}: {self.confinement.describe()}; {self.volume.applied}")

    def prepare_model(self) -> None:
        """A fresh ``ml/`` with the model data unpacked into ``ml/model``."""
        from jobs import storage
        from jobs.backends.local import roles

        shutil.rmtree(self.ml, ignore_errors=True)
        for sub in ("model", "code"):
            (self.ml / sub).mkdir(parents=True)
        self.tmp.mkdir(mode=0o700, exist_ok=True)
        self.stage_code()
        url = self.container.get("ModelDataUrl")
        if not url:
            self.logs.add("anyjob: the model has no ModelDataUrl: /opt/ml/model is empty")
            return
        archive = self.root / "model.tar.gz"
        started = time.monotonic()
        try:
            role = self.plan["model"].get("ExecutionRoleArn")
            storage.download_file(url, archive, credentials=roles.storage_credentials(role, url))
        except (storage.StorageError, OSError) as exc:
            reason = f'ClientError: Failed to download model data from URL "{url}": {exc}'
            raise ModelDataError(reason) from None
        try:
            count = extract_model(archive, self.ml / "model", url)
        finally:
            archive.unlink(missing_ok=True)
        self.logs.add(
            f"anyjob: model data from {url} unpacked into /opt/ml/model "
            f"({count} members, {time.monotonic() - started:.1f} s)"
        )

    def stage_code(self) -> None:
        """An ``s3://`` ``SAGEMAKER_SUBMIT_DIRECTORY`` of the embedded S3 (out of the sandbox's
        reach): fetched here (``code_staging``) for ``sandbox_spec`` to expose. The model's
        ``ModelDataUrl`` needs nothing of the kind: this process downloads it anyway."""
        from jobs import storage
        from jobs.backends.local import code_staging

        self.staged_code = None
        uri = (self.container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY")
        if not code_staging.needs_staging(uri):
            return
        try:
            limit = code_staging.max_bytes(int(self.plan.get("volume_gb") or 30) * 1024**3)
            self.staged_code = code_staging.stage(uri, self.root, limit)
        except (storage.StorageError, OSError) as exc:
            raise ModelDataError(f'ClientError: Failed to download the code from "{uri}": {exc}') from None
        self.logs.add(f"anyjob: fetched the code {uri} for the model server")

    def sandbox_spec(self, python: Path) -> Any:
        from jobs import storage
        from jobs.backends.local import image, roles, sandbox

        env = {**image.IMAGE_ENV, **(self.container.get("Environment") or {})}
        # A unix socket in a folder only anyjob and this endpoint's uid can enter: reachable
        # through InvokeEndpoint only. Without the sandbox the server sees the host's path.
        inside = sandbox.sandbox_mode() == "on"
        where = SOCKET_DIR_INSIDE if inside else str(self.socket_dir)
        env["ANYJOB_BIND_UNIX"] = f"{where}/{SOCKET_NAME}"
        env.pop("SAGEMAKER_BIND_TO_PORT", None)
        env.setdefault("SAGEMAKER_REGION", self.plan["region"])
        env["ANYJOB_STOP_GRACE_SECONDS"] = f"{self.plan['stop_grace_seconds']:g}"
        # The execution role's credentials, so the container can fetch s3:// code (none when the
        # model is isolated or the role unmapped; never the server's own). Environment wins.
        model = self.plan["model"]
        isolated = bool(model.get("EnableNetworkIsolation"))
        env = {**roles.job_environment(model.get("ExecutionRoleArn"), isolated=isolated), **env}
        expose = list(image.runtime_paths(python))
        code = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        if code.startswith("file://"):
            expose.append(storage.parse(code).path)
        elif code.startswith("/") and not (code == sandbox.ML or code.startswith(sandbox.ML + "/")):
            expose.append(Path(code))
        if self.staged_code is not None:  # set last: the model's Environment cannot move it
            from jobs.backends.local import code_staging

            expose.append(self.staged_code)
            env[code_staging.STAGED_VAR] = self.staged_code.as_uri()
        return sandbox.Sandbox(
            job_dir=self.ml,
            argv=[str(python), "-m", "anyjob_container", "serve"],
            env=env,
            # Its own network namespace either way; with the model's EnableNetworkIsolation
            # no network at all, as on AWS.
            network=not isolated,
            hide=[Path(p) for p in self.plan["hide"]],
            expose_ro=expose,
            scratch_dir=self.tmp,
            tmp_dir=self.tmp,
            binds=[(self.socket_dir, SOCKET_DIR_INSIDE)],
            preexec=self.confinement.preexec if self.confinement is not None else None,
        )

    def start_server(self, python: Path) -> Path:
        from jobs.backends.local import sandbox

        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.socket_dir.mkdir(mode=0o700)
        path = self.socket_dir / SOCKET_NAME
        self.pump_ended = threading.Event()
        self.logs.tail.clear()
        self.proc = sandbox.SandboxedProcess.start(
            self.sandbox_spec(python), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for note in self.proc.notes:
            if note not in self.notes:
                self.notes.append(note)
                self.logs.add(f"anyjob: {note}")
        threading.Thread(
            target=self.logs.pump, args=(self.proc.stdout, self.pump_ended), name="log-pump", daemon=True
        ).start()
        log.info("endpoint %s: model server starting on %s", self.name, path)
        return path

    def stop_server(self, graceful: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                proc.terminate()  # gunicorn finishes the requests in flight, then exits 0
                if proc.wait(timeout=self.plan["stop_grace_seconds"]) is None:
                    log.warning("endpoint %s: the model server ignored SIGTERM; killing it", self.name)
                    proc.kill()
            else:
                proc.kill()
        proc.wait(timeout=30)
        self.pump_ended.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def workers(self) -> int:
        """The model server's worker count, as the container works it out."""
        env = self.container.get("Environment") or {}
        try:
            return max(1, int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or os.cpu_count() or 1))
        except ValueError:
            return os.cpu_count() or 1

    @property
    def pings_needed(self) -> int:
        """Consecutive 200s from /ping before InService (for a container that does not name
        its workers): twice the server's worker count."""
        return max(3, 2 * min(self.workers, 32))

    def wait_until_ready(self, port: Path) -> tuple[str, str]:
        """Until /ping says 200: ("ready", "") or ("failed", reason), ("exited", reason),
        ("port", reason) (someone else took the port), ("deleting", ""), ("stop", "").
        Raises ``Lost``."""
        limit = self.plan["startup_seconds"]
        deadline = time.monotonic() + limit
        pause = 0.05
        last = "it never answered"
        healthy = 0
        answers: dict[str, int | None] = {}  # worker pid → its latest /ping status
        while True:
            self.logs.flush_if_due()
            if self.watch():
                return "deleting", ""
            if self.stop_requested.is_set():
                return "stop", ""
            code = self.proc.poll()
            if code is not None:
                self.pump_ended.wait(timeout=5)
                if any("Connection in use" in line for line in self.logs.tail):
                    return "port", PORT_TAKEN
                return "exited", (
                    f"The primary container for production variant {self.variant} exited with code {code} "
                    "before it passed the ping health check."
                )
            status, body, worker = ping(port)
            if worker:
                answers[worker] = status
            if status == 200:
                # Each server worker loads the model on its own: one 200 may come from a worker
                # that is ready while another still loads. Ready when every worker has said
                # 200 (the container names the worker that answers), else, for a container
                # that does not, when several pings in a row, each on a new connection
                # (spread over the workers), all say 200.
                healthy += 1
                ready = [w for w, code in answers.items() if code == 200]
                if answers and len(ready) >= self.workers:
                    return "ready", ""
                if not answers and healthy >= self.pings_needed:
                    return "ready", ""
                time.sleep(0.01)
                continue
            healthy = 0
            if status == 500:
                # The container answers 500 only when the model can never load (the code
                # could not be fetched or imported, model_fn raised): no use waiting.
                return "failed", (
                    f"{ping_reason(body)} (the primary container for production variant {self.variant} "
                    "did not pass the ping health check)."
                )
            if status is not None:
                last = f"it last answered {status}: {ping_reason(body)}"
            if any("Connection in use" in line for line in self.logs.tail):
                return "port", PORT_TAKEN
            if time.monotonic() >= deadline:
                return "failed", (
                    f"The primary container for production variant {self.variant} did not pass the ping "
                    f"health check within {limit:g} seconds ({last})."
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def supervise(self) -> tuple[str, str]:
        """While in service: ("deleting", ""), ("stop", ""), ("exited", reason). Raises ``Lost``."""
        while True:
            self.logs.flush_if_due()
            if self.watch():
                return "deleting", ""
            if self.stop_requested.is_set():
                return "stop", ""
            code = self.proc.poll()
            if code is not None:
                return "exited", f"the model server exited with code {code}"
            time.sleep(0.1)

    # -- the whole life -----------------------------------------------------------------------------
    def run(self) -> int:
        os.environ["DJANGO_SETTINGS_MODULE"] = self.plan["django_settings"]
        import django

        django.setup()
        if not self.claim():
            log.info("endpoint %s: generation %d is not current; nothing to do", self.name, self.generation)
            return 0
        from jobs.backends.local.models import LocalEndpointLogEvent

        self.logs.attach(LocalEndpointLogEvent, {"endpoint_id": self.endpoint_id})
        for note in self.notes:
            self.logs.add(f"anyjob: {note}")
        if self.generation > 1:
            self.logs.add(
                f"anyjob: the endpoint's previous host process stopped; this one ({self.identity}, "
                f"generation {self.generation}) starts the model server again"
            )
        beat = threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)
        beat.start()
        removed = False
        try:
            self.serve()
        except Lost:
            log.warning("endpoint %s: its record is gone or no longer ours; stopping", self.name)
            self.stop_server()  # gracefully still: requests in flight get their answers
            return 0
        except Exception as exc:  # a bug of ours or a fault of the machine: say so on the endpoint
            log.exception("endpoint %s: internal error", self.name)
            self.stop_server(graceful=False)
            with contextlib.suppress(Exception):
                self.fail(f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            self.done.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):
                self.logs.flush()
            with contextlib.suppress(Exception):
                removed = self.leave()
            if removed:
                if self.volume is not None:
                    self.volume.release()
                shutil.rmtree(self.root, ignore_errors=True)
        return 0

    def serve(self) -> None:
        from jobs.backends.local import image

        if self.watch(force=True):
            return  # deleted before it started: leave() removes the row
        try:
            self.prepare_instance()
        except OSError as exc:
            self.fail(f"InternalServerError: could not prepare the instance: {exc}")
            return
        try:
            self.prepare_model()
        except ModelDataError as exc:
            self.fail(str(exc))
            return
        try:
            python = image.ensure_image_env(Path(self.plan["image_env_root"]))
        except image.ImageEnvError as exc:
            self.fail(f"InternalServerError: {exc}")
            return
        restarts = 0
        while True:
            served = False  # whether this server passed /ping
            for _attempt in range(PORT_ATTEMPTS):
                port = self.start_server(python)
                outcome, reason = self.wait_until_ready(port)
                if outcome != "port":
                    break
                self.logs.add(f"anyjob: {port} was taken meanwhile; trying again")
                self.stop_server(graceful=False)
            if outcome == "ready":
                server_pid = self.proc.payload_pid(timeout=2.0)
                self.logs.flush()  # InService shows a log that says how it got there
                self.set_ready(CONTRACT_PORT, server_pid)
                log.info("endpoint %s: in service on %s", self.name, port)
                served = True
                outcome, reason = self.supervise()
            if outcome in ("deleting", "stop"):
                self.stop_server()
                return
            # The server failed to start, or died: the reason, with its last words.
            self.stop_server(graceful=False)
            self.logs.flush()
            if outcome == "exited" and served and self.watch(force=True) == "":
                # It was serving: bring it back (SageMaker replaces a failed instance).
                restarts += 1
                delay = min(RESTART_BACKOFF_MAX, 2.0 ** (restarts - 1))
                self.logs.add(f"anyjob: {reason}; restarting it in {delay:g} s")
                self.set_unavailable()
                resume = time.monotonic() + delay
                while time.monotonic() < resume:
                    if self.stop_requested.wait(WATCH_SECONDS) or self.watch():
                        return  # stopped, or deleted meanwhile (leave() removes the row)
                continue
            self.fail(failure(reason, list(self.logs.tail)))
            return

    def cleanup(self) -> None:
        self.stop_server(graceful=False)
        if self.confinement is not None:
            self.confinement.remove()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if not os.environ.get("ANYJOB_LOCAL_KEEP_JOB_DIRS") and self.volume is not None:
            self.volume.release()


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--detach"]
    if len(args) != 1:
        print("usage: python -m jobs.backends.local.endpoint_host [--detach] PLAN_FILE", file=sys.stderr)
        return 2
    plan_file = Path(args[0])
    plan = json.loads(plan_file.read_text())
    root = Path(plan["root"])
    # Before detaching, so the caller returns only once the host is alive by the lock's measure.
    lock = take_lock(root)
    if lock is None:
        print(f"endpoint {plan['name']}: another host process serves it", file=sys.stderr)
        return 0
    if "--detach" in argv:
        detach()
    handler = logging.FileHandler(root / "host.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    host = Host(plan)

    def stop(signum: int, frame: object) -> None:
        host.stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        return host.run()
    finally:
        host.cleanup()
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
