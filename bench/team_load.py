"""bench/team_load: 50 teammates browsing while 10 jobs run, gunicorn against the dev server.

For each database (SQLite, then PostgreSQL: a throwaway server started as the tests start it,
tests/postgres.py), anyjob is started the way ``make run`` starts it (``python -m webapp.run``:
the embedded Redis, a Celery worker and beat, gunicorn), with 10,000 jobs in the history
(``seed_jobs``) and 10 real local training jobs running (submitted through the new-job form;
each prints a log line every half second until it is stopped). Django's development server
(``runserver``) is started beside it on the same database: the baseline, in the same run.

50 simulated teammates, each signed in with a session of their own (one keep-alive connection
each), browse as the pages make a browser do: the history (then its htmx refresh every 3 s),
one running job's page (then its status and log fragments every 2 s), a search now and then,
with a second or so of reading between pages. Each server gets the same load for
``--seconds``, one after the other. Reported: requests/s, median and p95 latency, errors (any
answer but 200, or no answer within 10 s).

Target: gunicorn p95 ≤ 300 ms and 0 errors, on SQLite and on PostgreSQL (2 cores). A miss is
reported, not an error (exit 0).

Run: ``make bench`` or ``.venv/bin/python bench/team_load.py [--seconds N] [--users N]
[--database sqlite|postgres|both]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import postgres, servers  # noqa: E402

USERS, JOBS, HISTORY = 50, 10, 10_000
PASSWORD = "teammate-password-1"
P95_TARGET_MS = 300
TIMEOUT = 10.0
JOB_SCRIPT = (
    "import itertools, time\n"
    "for step in itertools.count():\n"
    "    print(f'step {step} loss {1 / (step + 1):.4f}', flush=True)\n"
    "    time.sleep(0.5)\n"
)

SETUP = """
import os
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

User = get_user_model()
hashed = make_password(os.environ["BENCH_PASSWORD"])  # once: the same password for everyone
User.objects.bulk_create(
    [User(username=f"teammate-{n}", password=hashed) for n in range(1, int(os.environ["BENCH_USERS"]) + 1)]
)
client = Client(SERVER_NAME="127.0.0.1")
client.force_login(User.objects.get(username="admin"))
for n in range(int(os.environ["BENCH_JOBS"])):
    data = {
        "name": f"team-load-{n}", "entry_point": "train.py", "instance_type": "ml.m5.large",
        "instance_count": "1", "volume_size_gb": "1", "max_runtime_seconds": "900",
        "code": SimpleUploadedFile("train.py", os.environ["BENCH_SCRIPT"].encode()),
    }
    for prefix in ("ch", "hp", "env", "tag"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = client.post("/new/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
"""

BUILD_IMAGE_ENV = """
from django.conf import settings
from jobs.backends.local import image
image.ensure_image_env(settings.ANYJOB_IMAGE_ENV_ROOT)
"""

STOP_JOBS = """
import os
from jobs.backends import get_backend
backend = get_backend()
for n in range(int(os.environ["BENCH_JOBS"])):
    backend.stop_training_job(f"team-load-{n}")
"""

STATUSES = """
from jobs.models import TrainingJob
print(",".join(TrainingJob.objects.filter(name__startswith="team-load-").values_list("status", flat=True)))
"""


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(ms)
            else:
                self.errors.append(error)


class Teammate:
    """One signed-in person in a browser: a session cookie and a keep-alive connection."""

    def __init__(self, port: int, username: str) -> None:
        self.port, self.username = port, username
        self.cookies: dict[str, str] = {}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None, htmx: bool = False):
        headers = {"Host": "127.0.0.1"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if htmx:
            headers["HX-Request"] = "true"
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, anew
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                page = response.read().decode(errors="replace")
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            self.cookies[name] = value
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return response.status, page

    def sign_in(self) -> None:
        _, page = self.request("GET", "/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = {"csrfmiddlewaretoken": token, "username": self.username, "password": PASSWORD}
        status, _ = self.request("POST", "/accounts/login/", form)
        if status != 302:
            raise SystemExit(f"{self.username} could not sign in ({status})")


def browse(
    user: Teammate, jobs: list[str], deadline: float, results: Results, seed: int, pace: float
) -> None:
    """A teammate's visit, over and over until the deadline, as the pages' htmx would do it;
    every pause times ``pace`` (0: flat out, no reading time and no poll interval)."""
    rnd = random.Random(seed)

    def get(path: str, htmx: bool = False) -> str:
        started = time.perf_counter()
        try:
            status, page = user.request("GET", path, htmx=htmx)
        except OSError as exc:
            results.add(None, f"{path}: {type(exc).__name__}")
            user.conn = None
            return ""
        took = (time.perf_counter() - started) * 1000
        if status != 200:
            results.add(None, f"{path}: HTTP {status}")
        else:
            results.add(took)
        return page

    def pause(seconds: float) -> bool:
        time.sleep(min(seconds * pace, max(0.0, deadline - time.monotonic())))
        return time.monotonic() < deadline

    time.sleep(rnd.uniform(0, 2) * pace)  # not everyone arrives at the same instant
    while time.monotonic() < deadline:
        history = rnd.choice(
            ["/jobs/", "/jobs/", "/jobs/?status=InProgress", "/jobs/?q=xgb", "/jobs/?page=3"]
        )
        get(history)
        for _ in range(rnd.randint(1, 2)):  # the history refreshes itself every 3 s while jobs run
            if not pause(3):
                return
            get(history, htmx=True)
        if not pause(rnd.uniform(0.5, 1.5)):
            return
        job = rnd.choice(jobs)
        get(f"/jobs/{job}/")
        token = None
        for _ in range(rnd.randint(2, 4)):  # the job page polls its status and its log every 2 s
            if not pause(2):
                return
            get(f"/jobs/{job}/status/?was=InProgress", htmx=True)
            page = get(
                f"/jobs/{job}/log/" + (f"?token={urllib.parse.quote(token)}" if token else ""), htmx=True
            )
            found = re.search(r"\?token=([^\"&]+)", page)
            token = urllib.parse.unquote(found.group(1).replace("&amp;", "&")) if found else token
        if not pause(rnd.uniform(0.5, 1.5)):
            return


def measure(people: list[Teammate], seconds: float, jobs: list[str], pace: float) -> dict:
    results = Results()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=browse, args=(p, jobs, deadline, results, n, pace), daemon=True)
        for n, p in enumerate(people)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 3 * TIMEOUT)
    took = time.monotonic() - started
    lat = sorted(results.latencies)
    return {
        "requests": len(lat) + len(results.errors),
        "rps": (len(lat) + len(results.errors)) / took,
        "median": statistics.median(lat) if lat else float("nan"),
        "p95": statistics.quantiles(lat, n=20, method="inclusive")[-1] if len(lat) > 1 else float("nan"),
        "errors": len(results.errors),
        "error_examples": sorted(set(results.errors))[:3],
    }


def manage(env: dict[str, str], code: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=REPO,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py shell failed:\n{done.stdout}{done.stderr[-3000:]}")
    return done.stdout


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def run_database(database: str, args: argparse.Namespace) -> dict[str, dict]:
    var = Path(tempfile.mkdtemp(prefix=f"anyjob-team-load-{database}-"))
    web_port, dev_port = servers.free_port(), servers.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANYJOB_", "DATABASE_", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DJANGO_SECRET_KEY="team-load-" + "k" * 50,
        ANYJOB_VAR_DIR=str(var),
        ANYJOB_PORT=str(web_port),
        ANYJOB_ADMIN_PASSWORD="team-load-admin-password",
        ANYJOB_IMAGE_ENV_ROOT=os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(REPO / "var" / "image")),
        ANYJOB_LOCAL_FILE_ROOTS=str(var),
        ANYJOB_LOCAL_MAX_INSTANCES=str(JOBS),
        ANYJOB_LOCAL_STOP_GRACE_SECONDS="5",
        ANYJOB_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    server = None
    if database == "postgres":
        server = postgres.Server()
        import psycopg

        with psycopg.connect(host=server.host, user=postgres.USER, dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE anyjob")
        env["DATABASE_URL"] = server.url("anyjob")
    log = (var / "stack.log").open("wb")
    stack = servers.start([sys.executable, "-m", "webapp.run"], cwd=REPO, env=env, stdout=log, stderr=log)
    dev = None
    try:
        wait_for(
            lambda: "anyjob is up on" in (var / "stack.log").read_text(errors="replace"), 180, "the stack"
        )
        subprocess.run(
            [sys.executable, "manage.py", "seed_jobs", "--count", str(HISTORY)],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        manage(env, BUILD_IMAGE_ENV)  # once, before any job (about 15 s the first time), not timed
        manage(env, SETUP, BENCH_USERS=str(args.users), BENCH_JOBS=str(JOBS), BENCH_PASSWORD=PASSWORD,
               BENCH_SCRIPT=JOB_SCRIPT)  # fmt: skip
        running = lambda: manage(env, STATUSES).strip().split(",") == ["InProgress"] * JOBS  # noqa: E731
        wait_for(running, 180, f"{JOBS} jobs InProgress")
        dev = servers.start(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{dev_port}", "--noreload", "--insecure"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.wait_for_port(dev_port, timeout=60, proc=dev)
        jobs = [f"team-load-{n}" for n in range(JOBS)]
        results = {}
        for label, port in (("gunicorn", web_port), ("runserver", dev_port)):
            people = [Teammate(port, f"teammate-{n}") for n in range(1, args.users + 1)]
            for person in people:
                person.sign_in()
            results[label] = measure(people, args.seconds, jobs, pace=1.0)
            if args.flat_out:
                results[f"{label} flat out"] = measure(people, args.flat_out, jobs, pace=0.0)
        if manage(env, STATUSES).strip().split(",") != ["InProgress"] * JOBS:
            print(f"team_load: warning: not every job was still running at the end ({database})")
        print_table({database: results}, args)  # kept even if what follows fails
        return results
    finally:
        # The jobs run detached (by design): stop them, and make sure nothing is left behind.
        with contextlib.suppress(BaseException):
            manage(env, STOP_JOBS, BENCH_JOBS=str(JOBS))
        deadline = time.monotonic() + 60
        while leftovers(var, exclude={stack.pid}) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers(var, exclude={stack.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if dev is not None:
            servers.stop(dev)
        with contextlib.suppress(ProcessLookupError):
            stack.send_signal(signal.SIGINT)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            servers.stop(stack)
        log.close()
        if server is not None:
            server.stop()
        shutil.rmtree(var, ignore_errors=True)


def print_table(table: dict[str, dict], args: argparse.Namespace) -> None:
    print(
        f"team_load: {args.users} signed-in teammates browsing for {args.seconds:g} s a server while "
        f"{JOBS} local jobs run; {HISTORY:,} jobs in the history; {os.cpu_count()} cores"
    )
    if args.flat_out:
        print(
            f"  (then 'flat out': the same {args.users} without reading time nor poll intervals,"
            f" {args.flat_out:g} s)"
        )
    heads = f"{'requests':>8} {'req/s':>7} {'median ms':>9} {'p95 ms':>7} {'errors':>6}"
    print(f"  {'database':10} {'server':19} {heads}")
    for db, results in table.items():
        for label, r in results.items():
            verdict = ""
            if label == "gunicorn":
                ok = r["p95"] <= P95_TARGET_MS and r["errors"] == 0
                verdict = f"  target p95 <= {P95_TARGET_MS} ms, 0 errors: {'PASS' if ok else 'MISS'}"
            print(
                f"  {db:10} {label:19} {r['requests']:8} {r['rps']:7.1f} {r['median']:9.1f} {r['p95']:7.1f}"
                f" {r['errors']:6}{verdict}"
            )
            if r["error_examples"]:
                print(f"  {'':30} errors such as: {'; '.join(r['error_examples'])}")
        g, d = results.get("gunicorn"), results.get("runserver")
        if g and d and g["p95"] > 0:
            print(f"  {db:10} runserver/gunicorn p95: {d['p95'] / g['p95']:.2f}x")
    sys.stdout.flush()


def leftovers(var: Path, exclude: set[int]) -> set[int]:
    """Job processes of this run (the launcher's children aside): started with its ANYJOB_VAR_DIR."""
    marker = f"ANYJOB_VAR_DIR={var}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in exclude | {os.getpid()}:
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0") and "executor" in (
                    entry / "cmdline"
                ).read_text(errors="replace"):
                    found.add(int(entry.name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45, help="load per server (default 45)")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument(
        "--flat-out",
        type=float,
        default=15,
        help="then the same users without pauses for N s (capacity; 0: skip)",
    )
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    if "postgres" in databases and postgres.missing():
        print(f"team_load: PostgreSQL skipped: {postgres.missing()}")
        databases.remove("postgres")
    table = {db: run_database(db, args) for db in databases}
    print_table(table, args)


if __name__ == "__main__":
    main()
