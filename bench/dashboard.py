"""bench/dashboard: the job history and job pages with 100,000 jobs, in SQLite and in PostgreSQL.

Seeds a throwaway database with ``manage.py seed_jobs`` (1,000 jobs, then up to ``--count``),
signs a user in, and times requests through Django's test client (the whole request: sessions,
auth, view, template; the database connection handled per request as the server handles it:
a new one each request on SQLite, kept for a minute and checked first on PostgreSQL, the
settings' defaults): the history's first page, a status filter, free-text
searches, page 500, and one job's page, in rounds over all the pages. The baseline is
``/accounts/login/`` through the same client in the same run (a template, the session and the
user, no job query). Queries per page
are counted at 1,000 and at ``--count`` jobs, and for page sizes 10 and 200: they must not grow.

The history by a metric (issue 12; ``seed_jobs`` seeds each job's metric series): sorted by
a metric's minimum (first page and page 500 of the descending order), filtered by one, and both
with a status filter; each is also printed as a ratio against the history's first page.

Then, over the same history (queries counted at ``--count`` only):

- a job with a 10,000-line log and real artifacts: the training job is run for the purpose on
  the local backend (the sandbox, its log, ``model.tar.gz``/``output.tar.gz`` packed by the
  emulator) and recorded the way the poller does (``refresh_job``). Timed: its page (the last
  500 lines), the artifacts fragment the page loads (htmx), one artifact file shown, the log
  fragment (htmx, following from the page's token), the whole log downloaded, and the page as
  a browser loads it (page + artifacts fragment + log fragment, one sample);
- the history while 20 jobs run (20 rows InProgress on top, copied from a seeded running job):
  the first page (live: the table polls), the table's own refresh (htmx, every 3 s) and a
  running job's status fragment (htmx, every 2 s, cycling over the 20), and from these the
  server time one viewer's polling costs a second.

Both databases by default, each in a child process of its own, then side by side: SQLite (a
file under a temporary folder) and PostgreSQL (a throwaway server started for the run, on a
unix socket, as the tests start it: tests/postgres.py; fsync off, as there). ``--database``
runs one of them alone.

Targets: p95 ≤ 150 ms for each history variant, ≤ 50 ms for a job's page, queries constant.
A miss is reported, not an error (exit 0). ``--explain`` prints each page's SQL, time and plan.
The seeded job pages have no log in the local backend (the log tail costs one lookup); the job
run for the purpose has one.

``--seeded DIR`` keeps the seeded databases (1,000 jobs, and ``--count``) in ``DIR`` and, on a
later run, restores them instead of seeding again (100,000 jobs take minutes): a SQLite copy,
or a ``pg_dump`` restored into the new server. They are keyed by database, count and the
``seed_jobs`` source, and migrated after the restore (a new migration is measured too).

Run: ``make bench`` or ``.venv/bin/python bench/dashboard.py [--count N] [--runs N]
[--database sqlite|postgres|both] [--explain] [--keep] [--seeded DIR]``.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import io
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VAR = tempfile.mkdtemp(prefix="anyjob-bench-dashboard-")
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": VAR,
        "ANYJOB_BACKEND": "local",
        "ANYJOB_IMAGE_ENV_ROOT": os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(REPO / "var" / "image")),
        "ANYJOB_LOCAL_FILE_ROOTS": VAR,
        "DJANGO_SECRET_KEY": "bench",
        "DJANGO_DEBUG": "0",
        "ANYJOB_LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("DATABASE_URL", None)  # a throwaway database: SQLite under VAR, or a new server

HISTORY_P95_MS = 150
DETAIL_P95_MS = 50
SMALL = 1_000
LOG_LINES = 10_000
RUNNING = 20
# The job run for the page with a log: 10,000 lines, a model and output files.
BIG_JOB = """
import json, os
from pathlib import Path

for i in range(10_000):
    print(f"epoch {i // 500:3d} step {i:5d}: loss={1 / (i + 1):.6f} lr=0.001 throughput=812.4 samples/s")
model, output = Path(os.environ["SM_MODEL_DIR"]), Path(os.environ["SM_OUTPUT_DATA_DIR"])
(model / "model.json").write_text(json.dumps({"weights": [0.5] * 1000, "bias": 0.1}, indent=1))
(model / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024))
(model / "tokenizer").mkdir()
for n in range(20):
    (model / "tokenizer" / f"vocab-{n:02d}.txt").write_text("\\n".join(f"token{k}" for k in range(2000)))
rows = "".join(f"{i},{1 / (i + 1):.6f}\\n" for i in range(10_000))
(output / "metrics.csv").write_text("step,loss\\n" + rows)
"""


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000, help="jobs in the history (default 100,000)")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds over the pages, after 3 warm-ups")
    parser.add_argument("--explain", action="store_true", help="print each page's queries and plans")
    parser.add_argument("--keep", action="store_true", help=f"keep the SQLite database ({VAR})")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seeded", metavar="DIR", help="keep the seeded databases in DIR, reuse them later")
    args = parser.parse_args()
    if not args.keep:
        atexit.register(shutil.rmtree, VAR, ignore_errors=True)
    if args.database == "both":
        side_by_side(args)
        return
    server = None
    if args.database == "postgres":
        from tests.postgres import Server

        server = Server()
        atexit.register(server.stop)
        os.environ["DATABASE_URL"] = server.url("anyjob_bench")
        import psycopg

        with psycopg.connect(host=server.host, user="anyjob", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE anyjob_bench")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import close_old_connections, connection, connections
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from jobs import views
    from jobs.models import TrainingJob

    setup_test_environment()
    Path(VAR, "static").mkdir(exist_ok=True)  # whitenoise looks there too
    call_command("migrate", verbosity=0)
    client = Client()
    snapshots = Snapshots(args.seeded, server)

    def seed(count: int) -> tuple[float, float] | None:
        """Seeds up to ``count`` jobs, or restores them (``--seeded``); the seeding's wall and
        CPU seconds (those of the run that seeded, when restored); the user signed in again."""
        took = snapshots.restore(count)
        if took is None:
            started, cpu = time.perf_counter(), time.process_time()
            call_command("seed_jobs", count=count, stdout=io.StringIO())
            took = time.perf_counter() - started, time.process_time() - cpu
            snapshots.save(count, took)
        client.force_login(get_user_model().objects.get_or_create(username="bench")[0])
        return took

    def get(url: str | tuple[str, ...]) -> None:
        """One URL, a ("htmx", URL) fragment request, or a tuple of those (a page as loaded)."""
        if isinstance(url, tuple) and url[0] != "htmx":
            for part in url:
                get(part)
            return
        htmx = isinstance(url, tuple)
        url = url[1] if htmx else url
        response = client.get(url, headers={"HX-Request": "true"} if htmx else {})
        assert response.status_code == 200, (url, response.status_code)
        if response.streaming:
            b"".join(response.streaming_content)

    def queries(url: str | tuple[str, ...]) -> list[dict[str, str]]:
        connections.close_all()
        with CaptureQueriesContext(connection) as captured:
            get(url)
        return captured.captured_queries

    small = min(SMALL, args.count)

    def pages() -> dict[str, str]:
        job = (
            TrainingJob.objects.filter(status="Failed")
            .exclude(failure_text="")
            .exclude(parent=None)
            .order_by("-pk")
            .first()
        ) or TrainingJob.objects.order_by("-pk").first()
        # A job seeded in the first 1,000: its name matches it and a few others at any size.
        rare = TrainingJob.objects.order_by("pk").values_list("name", flat=True)[small - 1]
        # Page 500 of the jobs with the loss; at 1,000 jobs (no page 500: Django shows the last,
        # where the jobs with it end and one more read starts) a page inside them, like it.
        deep = 500 if TrainingJob.objects.count() > 30_000 else 10
        return {
            "baseline /accounts/login/": "/accounts/login/",
            "history first page": "/jobs/",
            "history ?status=Failed": "/jobs/?status=Failed",
            "history ?q=imagenet (channel URI, ~10%)": "/jobs/?q=imagenet",
            "history ?q=roberta (hp value, ~3%)": "/jobs/?q=roberta",
            f"history ?q={rare} (rare) *": f"/jobs/?q={rare}",
            "history ?q=no-such-term (no match) *": "/jobs/?q=no-such-term",
            "history ?page=500": "/jobs/?page=500",
            "history ?sort=status *": "/jobs/?sort=status",
            "history ?sort=name&q=imagenet *": "/jobs/?sort=name&q=imagenet",
            "history ?status=Completed&q=imagenet *": "/jobs/?status=Completed&q=imagenet",
            LABEL_METRIC_SORT: f"/jobs/?sort={LOSS_COLUMN}&col={LOSS_COLUMN}",
            "history ?sort=-metric:..loss:min&page=500": f"/jobs/?sort=-{LOSS_COLUMN}&{COL}&page={deep}",
            LABEL_METRIC_FILTER: f"/jobs/?{LOSS_FILTER}&{COL}",
            "history ?mf=..lt:0.3&sort=metric&status=C": f"/jobs/?{LOSS_FILTER}&sort={LOSS_COLUMN}"
            f"&status=Completed&{COL}",
            "job detail (failed clone)": f"/jobs/{job.name}/",
        }

    seed(small)
    counts_small = {label: len(queries(url)) for label, url in pages().items()}

    seed_s, seed_cpu = seed(args.count)
    if connection.vendor == "postgresql":
        # What autovacuum does soon after a bulk load: statistics for the planner, and the
        # visibility map that lets index-only scans skip the table.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    urls = pages()
    extra = busy_pages(client)
    counts_big = {label: len(queries(url)) for label, url in urls.items()}
    for label, url in extra.items():
        counts_small[label] = None
        counts_big[label] = len(queries(next(url) if hasattr(url, "__next__") else url))
    urls.update(extra)
    page_sizes = {}
    if hasattr(views, "PAGE_SIZE"):
        default_size = views.PAGE_SIZE
        for size in (10, 200):
            views.PAGE_SIZE = size
            page_sizes[size] = len(queries("/jobs/?q=imagenet"))
        views.PAGE_SIZE = default_size

    # What the web server does once before its first request, here before the timed rounds:
    # importing its WSGI module settles the process (webapp.wsgi.settle: the views imported,
    # what start-up left behind frozen out of the collector's way). Without it a full
    # collection (~80 ms) lands on whichever page crosses it.
    import webapp.wsgi  # noqa: F401

    # Round-robin over the pages, so a moment of load on a shared machine touches every page
    # (and the baseline) alike rather than whichever page was being timed.
    timings: dict[str, list[float]] = {label: [] for label in urls}
    for run in range(3 + args.runs):
        for label, url in urls.items():
            # What the server does at each request's start and end (Django's test client
            # leaves it out): a new connection on SQLite (CONN_MAX_AGE 0), the kept one,
            # health-checked, on PostgreSQL (60 s).
            close_old_connections()
            target = next(url) if hasattr(url, "__next__") else url  # cycling over running jobs
            start = time.perf_counter()
            get(target)
            if run >= 3:  # three warm-up rounds
                timings[label].append((time.perf_counter() - start) * 1000)

    if connection.vendor == "sqlite":
        size = os.path.getsize(Path(VAR) / "anyjob.sqlite3") / 1e6
        database = f"SQLite {size:,.0f} MB"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database()), version()")
            size, version = cursor.fetchone()
        database = f"{version.split(' on ')[0]}, {size / 1e6:,.0f} MB"
    print(f"dashboard: {args.count:,} jobs ({database}), {args.runs} timed requests a page, round-robin")
    restored = f" (restored from {args.seeded}: the run that seeded them)" if snapshots.restored else ""
    print(f"  seed_jobs: {args.count - small:,} jobs in {seed_s:.1f} s ({seed_cpu:.1f} s CPU){restored}")
    base = statistics.median(timings["baseline /accounts/login/"])
    header = f"  {'page':42} {'median ms':>9} {'p95 ms':>7} {'x base':>7} {'queries':>14}  target"
    print(header)
    summary = {}
    for label, samples in timings.items():
        median, tail = statistics.median(samples), p95(samples)
        # At 1,000 jobs a search's matches may fit on the first page: COUNT(*) is then skipped.
        steady = counts_small[label] is None or counts_small[label] in (
            counts_big[label],
            counts_big[label] - 1,
        )
        if label.startswith("baseline") or label in NO_TARGET:
            target, verdict = "", ""
        else:
            limit = DETAIL_P95_MS if label.startswith("job") else HISTORY_P95_MS
            ok = tail <= limit and steady
            target, verdict = f"p95 <= {limit} ms", "PASS" if ok else "MISS"
        qs = (
            f"{counts_small[label]} @1k, {counts_big[label]}"
            if counts_small[label]
            else f"{counts_big[label]}"
        )
        print(f"  {label:42} {median:9.1f} {tail:7.1f} {median / base:6.1f}x {qs:>14}  {target} {verdict}")
        summary[label] = {
            "median_ms": round(median, 1),
            "p95_ms": round(tail, 1),
            "queries": counts_big[label],
        }
    print(
        "  * beyond the issue's list; queries: at 1,000 jobs, then at --count (equal, or one fewer at"
        " 1,000 when every match fits on the first page and COUNT(*) is skipped); pages added after the"
        " seeding: at --count only"
    )
    first = summary["history first page"]
    for label in [lbl for lbl in summary if "metric" in lbl]:
        row = summary[label]
        print(
            f"  {label}: {row['median_ms'] / first['median_ms']:.2f}x the history's first page at the median,"
            f" {row['p95_ms'] / first['p95_ms']:.2f}x at p95 ({row['queries']} queries, first page"
            f" {first['queries']})"
        )
    polling = polling_cost(summary)
    print(
        f"  one viewer's polling while {RUNNING} jobs run: {polling:.0f} ms of server time a second"
        f" (the {RUNNING} status fragments every 2 s and the table every 3 s, at their medians)"
    )
    if page_sizes:
        steady = len(set(page_sizes.values())) == 1
        shown = ", ".join(f"{n} at page size {s}" for s, n in page_sizes.items())
        print(f"  queries of ?q=imagenet: {shown} ({'constant' if steady else 'GROWS'})")
    if args.explain:
        explain(urls, queries)
    result = {
        "count": args.count,
        "seed_s": round(seed_s, 1),
        "database": database,
        "pages": summary,
        "polling_ms_per_s": round(polling),
    }
    print(json.dumps(result))


#: The history by a metric (issue 12): reported also against the history's first page.
LOSS_COLUMN = "metric:validation:loss:min"
COL = f"col={LOSS_COLUMN}"
LOSS_FILTER = "mf=validation:loss:min:lt:0.3"
LABEL_METRIC_SORT = "history ?sort=metric:validation:loss:min"
LABEL_METRIC_FILTER = "history ?mf=validation:loss:min:lt:0.3"
LABEL_PAGE = f"job page: {LOG_LINES:,}-line log, artifacts"
LABEL_HISTORY = f"history first page, {RUNNING} running (live)"
LABEL_TABLE = "history table refresh (htmx, every 3 s)"
LABEL_STATUS = "job status fragment, running (htmx, 2 s)"
LABEL_DOWNLOAD = f"job log download ({LOG_LINES:,} lines)"
LABEL_LOADED = "job page as loaded (page + 2 fragments)"
#: Reported without a target: a download, and three requests in a row.
NO_TARGET = (LABEL_DOWNLOAD, LABEL_LOADED)


def busy_pages(client) -> dict:
    """The pages beyond the seeded ones: a job with a long log and real artifacts (run on the
    local backend for the purpose), and the history while jobs run. Label → URL (or a cycle)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from jobs import detail, tasks
    from jobs.backends.local import image
    from jobs.models import TrainingJob
    from tests.local.jobs import training_request, wait_for

    owner = get_user_model().objects.get(username="bench")
    image.ensure_image_env(settings.ANYJOB_IMAGE_ENV_ROOT)
    code = Path(VAR, "big-job")
    code.mkdir()
    (code / "train.py").write_text(BIG_JOB)
    name = "bench-long-log"
    backend = tasks.get_backend()
    backend.create_training_job(training_request(name, code, "train.py", Path(VAR, "out")))
    done = wait_for(backend, name, timeout=120)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    job = TrainingJob.objects.create(
        owner=owner,
        name=name,
        entry_point="train.py",
        status="InProgress",
        output_path=Path(VAR, "out").as_uri(),
    )
    tasks.refresh_job(job)  # what the poller stores: Completed, the artifacts, the times
    job.refresh_from_db()
    assert job.status == "Completed" and job.model_artifacts, (job.status, job.model_artifacts)
    events, token, older = detail.log_tail(job)
    assert older and len(events) == detail.LOG_TAIL_LINES, (len(events), older)
    members = [m.name for m in backend.list_artifact_files(name, "model") if not m.is_dir]
    assert "model.json" in members and len(members) >= 22, members
    follow = f"/jobs/{name}/log/?token={token}" if token else f"/jobs/{name}/log/"
    text = b"".join(client.get(f"/jobs/{name}/log/?format=text").streaming_content)
    assert text.count(b"\n") >= LOG_LINES, text.count(b"\n")
    page = f"/jobs/{name}/"
    fragments = ("htmx", f"/jobs/{name}/artifacts/"), ("htmx", follow)

    # The history while jobs run: rows as a seeded running job's (its request, its steps).
    model = TrainingJob.objects.filter(status="InProgress").order_by("-pk").first()
    running = []
    for i in range(RUNNING):
        row = (
            TrainingJob.objects.get(pk=model.pk)
            if model
            else TrainingJob(owner=owner, entry_point="train.py")
        )
        row.pk, row.name, row.status = None, f"bench-running-{i:02d}", "InProgress"
        row.parent = None
        row.save()
        running.append(row.name)
    TrainingJob.objects.filter(name__in=running).update(created_at=timezone.now())
    status = itertools.cycle([("htmx", f"/jobs/{n}/status/?was=InProgress") for n in running])
    return {
        LABEL_PAGE: page,
        "job artifacts fragment (htmx)": fragments[0],
        "job artifact file (model.json shown)": f"/jobs/{name}/artifacts/model/model.json",
        "job log fragment (htmx, after the tail)": fragments[1],
        LABEL_DOWNLOAD: f"/jobs/{name}/log/?format=text",
        LABEL_LOADED: (page, *fragments),
        LABEL_HISTORY: "/jobs/",
        LABEL_TABLE: ("htmx", "/jobs/"),
        LABEL_STATUS: status,
    }


def polling_cost(summary: dict) -> float:
    """Server ms a second for one viewer: the status fragments of the running jobs every 2 s and
    the history table every 3 s (what the pages' hx-trigger ask for)."""
    return RUNNING / 2 * summary[LABEL_STATUS]["median_ms"] + summary[LABEL_TABLE]["median_ms"] / 3


def side_by_side(args: argparse.Namespace) -> None:
    """Each database in a child process (its own settings), then one table of both."""
    results = {}
    for database in ("sqlite", "postgres"):
        argv = [sys.executable, __file__, "--database", database, "--count", str(args.count)]
        argv += ["--runs", str(args.runs)] + (["--explain"] if args.explain else [])
        argv += ["--seeded", args.seeded] if args.seeded else []
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        print(done.stdout, end="")
        if done.returncode != 0:
            print(f"dashboard: the {database} run failed ({done.returncode})")
            return
        results[database] = json.loads(done.stdout.strip().splitlines()[-1])
    sqlite, postgres = results["sqlite"], results["postgres"]
    print(f"\ndashboard side by side: {args.count:,} jobs; p95 ms (median ms), queries")
    print(f"  {'page':42} {'SQLite':>18} {'PostgreSQL':>18}")
    for label, a in sqlite["pages"].items():
        b = postgres["pages"][label]
        cells = [f"{r['p95_ms']:.1f} ({r['median_ms']:.1f}), {r['queries']}" for r in (a, b)]
        print(f"  {label:42} {cells[0]:>18} {cells[1]:>18}")
    print(f"  {'seed_jobs (s)':42} {sqlite['seed_s']:>18} {postgres['seed_s']:>18}")
    polling = f"polling while {RUNNING} jobs run (ms/s)"
    print(f"  {polling:42} {sqlite['polling_ms_per_s']:>18} {postgres['polling_ms_per_s']:>18}")


class Snapshots:
    """``--seeded DIR``: the seeded databases kept between runs, one per database, count and
    ``seed_jobs`` source (a changed seeder seeds again). SQLite: a copy made with SQLite's
    backup API; PostgreSQL: ``pg_dump -Fc``, restored into this run's fresh server."""

    def __init__(self, folder: str | None, server) -> None:
        self.folder = Path(folder) if folder else None
        self.server = server
        self.restored = False
        source = (REPO / "jobs" / "management" / "commands" / "seed_jobs.py").read_bytes()
        self.key = hashlib.sha256(source).hexdigest()[:12]
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, count: int) -> Path:
        vendor = "postgres" if self.server else "sqlite"
        return self.folder / f"{vendor}-{count}-{self.key}.{'dump' if self.server else 'sqlite3'}"

    def restore(self, count: int) -> tuple[float, float] | None:
        """The seeded database of ``count`` jobs put in place (and migrated), or None."""
        if not self.folder or not self._path(count).exists():
            return None
        from django.core.management import call_command
        from django.db import connections

        connections.close_all()
        path = self._path(count)
        if self.server:
            import psycopg

            host = self.server.host
            with psycopg.connect(host=host, user="anyjob", dbname="postgres", autocommit=True) as c:
                c.execute("DROP DATABASE IF EXISTS anyjob_bench WITH (FORCE)")
                c.execute("CREATE DATABASE anyjob_bench")
            self._pg("pg_restore", "--no-owner", "-d", "anyjob_bench", str(path))
        else:
            self._sqlite_copy(path, Path(VAR) / "anyjob.sqlite3")
        call_command("migrate", verbosity=0)
        self.restored = True
        seeded = json.loads(path.with_suffix(".json").read_text())
        return seeded["seed_s"], seeded["seed_cpu_s"]

    def save(self, count: int, took: tuple[float, float]) -> None:
        if not self.folder:
            return
        from django.db import connections

        connections.close_all()
        path = self._path(count)
        partial = path.with_name(path.name + ".partial")
        if self.server:
            self._pg("pg_dump", "-Fc", "-d", "anyjob_bench", "-f", str(partial))
        else:
            self._sqlite_copy(Path(VAR) / "anyjob.sqlite3", partial)
        partial.replace(path)
        path.with_suffix(".json").write_text(json.dumps({"seed_s": took[0], "seed_cpu_s": took[1]}))

    def _pg(self, tool: str, *argv: str) -> None:
        from tests.postgres import bin_dir

        subprocess.run([str(bin_dir() / tool), "-h", self.server.host, "-U", "anyjob", *argv], check=True)

    @staticmethod
    def _sqlite_copy(source: Path, target: Path) -> None:
        import sqlite3

        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        src.close()
        dst.close()


def explain(urls: dict[str, str], queries) -> None:
    """Each page's queries: time (executed and fetched again, alone), SQL and the database's plan."""
    from django.db import connection

    for label, url in urls.items():
        url = next(url) if hasattr(url, "__next__") else url  # one of the running jobs
        print(f"\n{label} ({url})")
        for query in queries(url):
            sql = query["sql"]
            with connection.cursor() as cursor:
                start = time.perf_counter()
                cursor.execute(sql)
                cursor.fetchall()
                took = (time.perf_counter() - start) * 1000
                print(f"  {took:7.1f} ms  {sql[:300]}{'…' if len(sql) > 300 else ''}")
                if sql.startswith("SELECT"):
                    sqlite = connection.vendor == "sqlite"
                    cursor.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql)
                    for row in cursor.fetchall():
                        print(f"             plan: {row[-1] if sqlite else row[0]}")


if __name__ == "__main__":
    main()
