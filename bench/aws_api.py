"""bench/aws_api: what the SageMaker-compatible API (``/aws``) costs, each against a baseline
measured in the same run doing the same work.

1. ``DescribeTrainingJob`` with boto3 through ``/aws`` on the real web server (``python -m
   webapp.run web``: gunicorn, its own process) against ``LocalBackend.describe_training_job``
   called in-process for the same job: the added median and p99 (target ≤ 3 ms added). The API
   figure includes everything a client pays: boto3 signing and parsing, the loopback HTTP round
   trip, SigV4 verification, the key lookup and the JSON answer. Two figures for scale: boto3
   against ``bench/canned_http.py`` answering the same bytes with no work at all (the client's
   and the loopback's own share, which no server can remove) and boto3 against moto's server.
   It also counts the TCP connections boto3 opened (gunicorn's gthread worker keeps them alive).
2. S3 ``PutObject`` and ``GetObject`` of 100 MB with boto3 against anyjob's embedded S3 (the
   same web server) and against moto's S3 server (``moto.server``, its own process), same
   client, same bytes: throughput and the ratio anyjob/moto (target ≥ 1.0×).
3. ``CreateTrainingJob`` → the script's first log line through the API against
   ``LocalBackend.create_training_job`` (target: within 200 ms): ``bench/api_first_line.py``'s
   measurement, run here with fewer runs so the three figures come out together.

Run: ``make bench`` or ``.venv/bin/python bench/aws_api.py [--describes N] [--mb N] [--runs N]
[--describe-only]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import api_first_line  # noqa: E402  (sets the bench's environment: its own var/, no proxies out)

VAR = api_first_line.VAR
DESCRIBE_TARGET_MS = 3.0
S3_TARGET_RATIO = 1.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def start_web(redis_url: str) -> tuple[subprocess.Popen, str, Path]:
    """anyjob's web server as ``make run`` starts it (checks, migrations, gunicorn)."""
    from tests.servers import free_port, start, wait_for_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(REDIS_URL=redis_url, ANYJOB_PORT=str(port), PYTHONUNBUFFERED="1")
    log = VAR / "web.log"
    with log.open("wb") as out:
        proc = start([sys.executable, "-m", "webapp.run", "web"], cwd=REPO, env=env, stdout=out, stderr=out)
    wait_for_port(port, timeout=90, proc=proc)
    return proc, f"http://127.0.0.1:{port}", log


def client(service: str, endpoint: str, key_id: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def canned_server(body: bytes) -> tuple[subprocess.Popen, str]:
    """``bench/canned_http.py`` answering ``body`` to every request (its own process); its URL."""
    path = VAR / "canned-describe.json"
    path.write_bytes(body)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "canned_http.py"), str(path)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/aws"


def connections_opened(boto_client) -> int:
    """How many TCP connections the client's pool opened (1 when the server keeps them alive)."""
    manager = boto_client._endpoint.http_session._manager
    return sum(pool.num_connections for pool in manager.pools._container.values())


def bench_describe(sm, backend, name: str, count: int, moto_sm, canned_sm) -> None:
    moto_name = f"moto-{uuid.uuid4().hex[:8]}"
    moto_sm.create_training_job(**api_first_line.request(moto_name, "s3://moto/code.tar.gz"))
    calls = {
        "api": lambda: sm.describe_training_job(TrainingJobName=name),
        "direct": lambda: backend.describe_training_job(name),
        "canned": lambda: canned_sm.describe_training_job(TrainingJobName=name),
        "moto": lambda: moto_sm.describe_training_job(TrainingJobName=moto_name),
    }
    for _ in range(20):  # warm-up, each alike: connections, caches, imports
        for call in calls.values():
            call()
    opened_before = connections_opened(sm)
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(count):  # interleaved, so all see the same machine
        for label, call in calls.items():
            started = time.perf_counter()
            call()
            times[label].append((time.perf_counter() - started) * 1000)
    api, direct, canned, moto = times["api"], times["direct"], times["canned"], times["moto"]
    added_median = statistics.median(api) - statistics.median(direct)
    added_p99 = percentile(api, 0.99) - percentile(direct, 0.99)
    client_median = statistics.median(canned)
    client_p99 = percentile(canned, 0.99)

    def row(label: str, values: list[float]) -> str:
        return f"   {label:<50}{statistics.median(values):8.2f} {percentile(values, 0.99):8.2f}"

    print(f"1. DescribeTrainingJob, {count} calls each, warm (ms)           median      p99")
    print(row("boto3 → /aws (gunicorn, loopback)", api))
    print(row("baseline: LocalBackend in-process", direct))
    print(row("for scale: boto3 → a server answering the same bytes", canned))
    print(row("for scale: boto3 → moto's server (no job)", moto))
    print(f"   added by the API: median {added_median:+.2f} ms, p99 {added_p99:+.2f} ms")
    print(
        f"     of which boto3 and the loopback (the canned server): median {client_median:.2f} ms, "
        f"p99 {client_p99:.2f} ms; the server beyond the describe: median "
        f"{added_median - client_median:+.2f} ms"
    )
    opened = connections_opened(sm) - opened_before
    print(f"   TCP connections boto3 opened to anyjob for the {count} timed calls: {opened} (kept alive)")
    verdict = "PASS" if added_median <= DESCRIBE_TARGET_MS else "MISS"
    print(f"   target: ≤ {DESCRIBE_TARGET_MS:g} ms added (median): {verdict}")


def s3_round(s3, bucket: str, body: bytes) -> tuple[float, float]:
    """Seconds for one PutObject and one GetObject (read whole) of ``body``."""
    key = f"bench/{uuid.uuid4().hex}.bin"
    started = time.perf_counter()
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    put = time.perf_counter() - started
    started = time.perf_counter()
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    get = time.perf_counter() - started
    assert len(got) == len(body), (len(got), len(body))
    s3.delete_object(Bucket=bucket, Key=key)
    return put, get


def bench_s3(anyjob_s3, moto_s3, megabytes: int, rounds: int) -> None:
    body = os.urandom(megabytes * 1024 * 1024)
    bucket = f"bench-{secrets.token_hex(4)}"
    for s3 in (anyjob_s3, moto_s3):
        s3.create_bucket(Bucket=bucket)
        s3_round(s3, bucket, body[: 1024 * 1024])  # warm-up
    ours, theirs = [], []
    for _ in range(rounds):  # alternated
        ours.append(s3_round(anyjob_s3, bucket, body))
        theirs.append(s3_round(moto_s3, bucket, body))

    def rate(values: list[tuple[float, float]], which: int) -> float:
        return megabytes / statistics.median(v[which] for v in values)

    print(f"2. S3 with boto3, {megabytes} MB objects, {rounds} rounds (MB/s, median)")
    for which, label in ((0, "PutObject"), (1, "GetObject")):
        a, m = rate(ours, which), rate(theirs, which)
        verdict = "PASS" if a / m >= S3_TARGET_RATIO else "MISS"
        target = f"target ≥ {S3_TARGET_RATIO:g}×: {verdict}"
        print(f"   {label}: anyjob {a:7.1f}   moto {m:7.1f}   ratio {a / m:5.2f}×  ({target})")


def bench_first_line(endpoint: str, key_id: str, secret: str, runs: int) -> None:
    from jobs.backends.local.backend import LocalBackend

    sm = client("sagemaker", endpoint, key_id, secret)
    backend = LocalBackend()
    code = api_first_line.code_uri()

    def one(create) -> float:
        name = f"fl-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        create(api_first_line.request(name, code))
        took = api_first_line.until_first_line(backend, name, started)
        api_first_line.finish(backend, name)
        return took

    def api(request: dict) -> None:
        sm.create_training_job(**request)

    one(api), one(backend.create_training_job)  # warm-up
    through_api, direct = [], []
    for _ in range(runs):
        through_api.append(one(api))
        direct.append(one(backend.create_training_job))
    added = statistics.median(through_api) - statistics.median(direct)
    print(f"3. CreateTrainingJob → the script's first log line, {runs} runs each (ms, median)")
    print(f"   boto3 → /aws (gunicorn)            {statistics.median(through_api):8.1f}")
    print(f"   baseline: LocalBackend in-process  {statistics.median(direct):8.1f}")
    verdict = "PASS" if added <= api_first_line.TARGET_MS else "MISS"
    print(f"   added by the API: {added:+.1f} ms (target within {api_first_line.TARGET_MS:g} ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describes", type=int, default=500)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--describe-only", action="store_true", help="only figure 1")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs.awsapi.models import AccessKey
    from jobs.backends.local import image
    from jobs.backends.local.backend import LocalBackend
    from tests.servers import moto_s3_server, redis_server, stop

    call_command("migrate", verbosity=0)
    image.ensure_image_env(Path(settings.ANYJOB_IMAGE_ENV_ROOT))  # built once, not timed
    user = User.objects.create_user(f"bench-{secrets.token_hex(3)}")
    key, secret = AccessKey.create_for(user, "bench")
    folder = Path(tempfile.mkdtemp(prefix="redis-", dir=VAR))
    with redis_server(folder) as redis_url, moto_s3_server() as moto_url:
        web, base, log = start_web(redis_url)
        try:
            endpoint = f"{base}/aws"
            print(f"aws_api: anyjob at {endpoint} (gunicorn), moto at {moto_url}; 2 cores shared")
            sm = client("sagemaker", endpoint, key.access_key_id, secret)
            name = f"bench-{uuid.uuid4().hex[:8]}"
            sm.create_training_job(**api_first_line.request(name, api_first_line.code_uri()))
            backend = LocalBackend()
            api_first_line.finish(backend, name)
            moto_s3 = client("s3", moto_url, "testing", "testing")
            moto_sm = client("sagemaker", moto_url, "testing", "testing")
            from jobs.awsapi.common import shaped
            from jobs.awsapi.views import json_response

            answer = json_response(shaped("DescribeTrainingJob", backend.describe_training_job(name)), "x")
            canned, canned_url = canned_server(answer.content)
            try:
                canned_sm = client("sagemaker", canned_url, key.access_key_id, secret)
                bench_describe(sm, backend, name, args.describes, moto_sm, canned_sm)
            finally:
                canned.kill()
                canned.wait()
            if args.describe_only:
                return
            bench_s3(client("s3", endpoint, key.access_key_id, secret), moto_s3, args.mb, args.rounds)
            bench_first_line(endpoint, key.access_key_id, secret, args.runs)
        finally:
            stop(web)
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"the web server logged an error:\n{text[-3000:]}")


if __name__ == "__main__":
    main()
