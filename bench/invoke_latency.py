"""bench/invoke_latency: an invocation through anyjob's runtime path against a direct HTTP call.

The linear example is trained and deployed on the local backend (its ``serve`` in the sandbox,
in a network namespace of its own, on a unix socket that only anyjob can reach). Then, in the
same run and alternating in rounds, the same request is sent:

- directly: ``http.client`` keep-alive POST to the serve process's socket
  (``endpoint_host.UnixHTTPConnection``; the model server has no TCP port) (baseline);
- runtime path: ``LocalBackend.invoke_endpoint`` (SageMaker's limits, endpoint lookup, the call);
- dashboard task: ``run_invocation`` called as a function on a stored ``Invocation`` (the runtime
  path plus reading and storing the request and the answer; Celery queueing excluded).

Serially (one connection, one request at a time): latency median/p99 and the requests/s that
makes. Concurrently: 8 threads, each with a connection of its own (the direct path opens one per
thread; ``invoke_endpoint`` keeps one per thread and server), all released together, each sending
``--requests``/8 requests; throughput is requests over wall time, median of the rounds, with the
per-request latency under that load. The client threads share this process (and its GIL) on
both paths alike.

Targets: ≤ 5 ms added median for the runtime path, and its concurrent requests/s ≥ 0.8× the
direct call's.

Run: ``make bench`` or ``.venv/bin/python bench/invoke_latency.py [--requests N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
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
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": str(VAR),
        "ANYJOB_IMAGE_ENV_ROOT": os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(REPO / "var" / "image")),
        "DJANGO_SECRET_KEY": "bench",
        "ANYJOB_LOCAL_FILE_ROOTS": f"{VAR},{REPO / 'container' / 'examples'}",
    }
)
BODY = b"[[1.0, 2.0], [3.0, 4.0]]"
EXAMPLE = REPO / "container" / "examples" / "linear"
CONNECTIONS = 8


def wait(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


def stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]


def concurrently(make_call, requests: int, connections: int = CONNECTIONS) -> tuple[float, list[float]]:
    """``requests`` calls from ``connections`` threads released together: (requests/s over the
    wall time, each call's seconds). ``make_call`` runs in each thread and returns its call."""
    barrier = threading.Barrier(connections + 1, timeout=60)
    latencies: list[float] = []
    errors: list[BaseException] = []
    each = max(1, requests // connections)

    def worker() -> None:
        try:
            call = make_call()
            call()  # its connection opened
            barrier.wait()
            mine = []
            for _ in range(each):
                started = time.perf_counter()
                call()
                mine.append(time.perf_counter() - started)
            latencies.extend(mine)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: raised below
        barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(120)
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    assert len(latencies) == each * connections, "a client thread did not finish"
    return len(latencies) / wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per path and mode")
    parser.add_argument("--rounds", type=int, default=5, help="concurrent rounds per path")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs.backends.local import endpoint_host, image
    from jobs.backends.local.backend import LocalBackend
    from jobs.backends.local.launch import endpoint_root
    from jobs.backends.local.models import LocalEndpoint
    from jobs.endpoints.models import Endpoint, Invocation
    from jobs.endpoints.tasks import run_invocation
    from jobs.models import TrainingJob
    from tests.local.jobs import training_request

    call_command("migrate", verbosity=0)
    image.ensure_image_env(settings.ANYJOB_IMAGE_ENV_ROOT)
    backend = LocalBackend()
    name = f"bench-{uuid.uuid4().hex[:6]}"
    backend.create_training_job(
        training_request(
            name,
            EXAMPLE,
            "train.py",
            VAR / "out",
            channels={"train": (EXAMPLE / "data").as_uri()},
            hyperparameters={"epochs": "20"},
        )
    )
    wait(lambda: backend.describe_training_job(name)["TrainingJobStatus"] == "Completed", "training")
    model_data = backend.describe_training_job(name)["ModelArtifacts"]["S3ModelArtifacts"]
    code = VAR / "code" / "sourcedir.tar.gz"
    code.parent.mkdir()
    with tarfile.open(code, "w:gz") as tar:
        data = (EXAMPLE / "inference.py").read_bytes()
        info = tarfile.TarInfo("inference.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": code.as_uri()}
    backend.create_model(
        {
            "ModelName": name,
            "ExecutionRoleArn": settings.ANYJOB_ROLE_ARN,
            "PrimaryContainer": {
                "Image": "anyjob/generic:latest",
                "ModelDataUrl": model_data,
                "Environment": env,
            },
        }
    )
    backend.create_endpoint_config(
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        }
    )
    backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})
    try:
        wait(lambda: backend.describe_endpoint(name)["EndpointStatus"] == "InService", "InService", 60)
        row = LocalEndpoint.objects.get(name=name)
        socket_path = endpoint_host.socket_path(endpoint_root(row), row.generation)
        user = User.objects.create_user("bench")
        job = TrainingJob.objects.create(owner=user, name=name, entry_point="train.py", status="Completed")
        endpoint = Endpoint.objects.create(
            name=name,
            job=job,
            owner=user,
            inference_entry_point="inference.py",
            instance_type="ml.m5.large",
            status="InService",
        )

        def direct_on(connection) -> None:
            connection.request("POST", "/invocations", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()

        def direct_call():
            # Straight to the model server's unix socket (the only way in: it has no TCP port).
            connection = endpoint_host.UnixHTTPConnection(socket_path, timeout=60)
            return lambda: direct_on(connection)

        direct = direct_call()

        def runtime() -> None:
            backend.invoke_endpoint(name, BODY, content_type="application/json")

        def task() -> None:
            invocation = Invocation.objects.create(
                endpoint=endpoint, owner=user, body=BODY, content_type="application/json"
            )
            started = time.perf_counter()
            assert run_invocation(invocation.pk) == "Done"
            timings["task"].append(time.perf_counter() - started)

        timings: dict[str, list[float]] = {"direct": [], "runtime": [], "task": []}
        for fn in (direct, runtime, task):  # warm-up
            for _ in range(20):
                fn()
        timings = {"direct": [], "runtime": [], "task": []}
        rounds = 10
        for _ in range(rounds):
            for label, fn in (("direct", direct), ("runtime", runtime)):
                for _ in range(args.requests // rounds):
                    started = time.perf_counter()
                    fn()
                    timings[label].append(time.perf_counter() - started)
            for _ in range(args.requests // rounds // 4):
                task()
        # Concurrent throughput, alternating the paths round by round.
        rps: dict[str, list[float]] = {"direct": [], "runtime": []}
        loaded: dict[str, list[float]] = {"direct": [], "runtime": []}
        for _ in range(args.rounds):
            for label, make_call in (("direct", direct_call), ("runtime", lambda: runtime)):
                rate, latencies = concurrently(make_call, args.requests)
                rps[label].append(rate)
                loaded[label].extend(latencies)
    finally:
        backend.delete_endpoint(name)

    ms = {k: [v * 1000 for v in vs] for k, vs in timings.items()}
    (d_med, d_p99), (r_med, r_p99), (t_med, t_p99) = (
        stats(ms["direct"]),
        stats(ms["runtime"]),
        stats(ms["task"]),
    )
    d_rps = len(ms["direct"]) / (sum(ms["direct"]) / 1000)
    r_rps = len(ms["runtime"]) / (sum(ms["runtime"]) / 1000)
    print(
        f"invoke_latency: linear model on the local backend, {len(ms['direct'])} serial requests per path,"
        f" then {args.rounds} rounds of {args.requests} over {CONNECTIONS} connections, 2 cores"
    )
    print(f"  serial, one connection {'':<13} {'median':>8} {'p99':>8} {'req/s':>8}")
    print(f"  {'direct HTTP to serve (baseline)':<36} {d_med:6.2f}ms {d_p99:6.2f}ms {d_rps:8.0f}")
    print(f"  {'runtime path (invoke_endpoint)':<36} {r_med:6.2f}ms {r_p99:6.2f}ms {r_rps:8.0f}")
    print(f"  {'dashboard task (run_invocation)':<36} {t_med:6.2f}ms {t_p99:6.2f}ms")
    print(f"  {CONNECTIONS} connections at once {'':<13} {'median':>8} {'p99':>8} {'req/s':>8}")
    rates = {}
    for label, title in (
        ("direct", "direct HTTP to serve (baseline)"),
        ("runtime", "runtime path (invoke_endpoint)"),
    ):
        med, p99 = stats([v * 1000 for v in loaded[label]])
        rates[label] = statistics.median(rps[label])
        spread = f"(rounds {min(rps[label]):.0f}-{max(rps[label]):.0f})"
        print(f"  {title:<36} {med:6.2f}ms {p99:6.2f}ms {rates[label]:8.0f} {spread}")
    overhead = r_med - d_med
    verdict = "PASS" if overhead <= 5 else "MISS"
    print(f"  runtime path overhead: {overhead:+.2f} ms median, serial (target <= 5 ms: {verdict})")
    print(f"  runtime path req/s serial = {r_rps / d_rps:.2f}x direct")
    ratio = rates["runtime"] / rates["direct"]
    verdict = "PASS" if ratio >= 0.8 else "MISS"
    print(
        f"  runtime path req/s at {CONNECTIONS} connections = {ratio:.2f}x direct (target >= 0.8: {verdict})"
    )
    added = t_med - d_med
    print(f"  dashboard task adds {added:+.2f} ms median over direct (request and answer stored in the DB)")


if __name__ == "__main__":
    main()
