"""bench/serve_throughput: ``serve`` against a Flask app under gunicorn, same load, same run.

Both servers get the same work per request (JSON decode, a trivial predict — the sum of
each row — JSON encode), the same gunicorn worker count, worker class and keep-alive, and
listen on free 127.0.0.1 ports. Each is warmed up, then driven for ``--duration`` seconds
at ``--connections`` keep-alive connections by ``wrk`` (Debian package ``wrk``; a slower
Python load generator stands in when it is missing).
Targets: requests/s ≥ 1.0 × the baseline's, p99 latency ≤ 20 ms.

Run: ``make bench`` or ``.venv/bin/python bench/serve_throughput.py [--worker-class both]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "container")]

from anyjob_container.serve.server import KEEPALIVE, THREADS  # noqa: E402
from anyjob_container.serve.settings import WORKER_CLASSES, cpu_count  # noqa: E402
from tests.container.support import container_env  # noqa: E402
from tests.servers import free_port, start, stop, wait_for_port  # noqa: E402

BODY = json.dumps([[1.5, 2.5, 3.5, 4.5], [5, 6, 7, 8], [0.25, 0.5, 0.75, 1.0]])
EXPECTED = json.dumps([12.0, 26, 2.5], separators=(",", ":"))
TARGET_RATIO = 1.0
TARGET_P99_MS = 20.0

INFERENCE = """\
def model_fn(model_dir):
    return None


def predict_fn(data, model):
    return [sum(row) for row in data]
"""

FLASK_APP = """\
import json

from flask import Flask, Response, request

app = Flask(__name__)


@app.get("/ping")
def ping():
    return Response('{"status":"ready"}', mimetype="application/json")


@app.post("/invocations")
def invocations():
    data = json.loads(request.get_data())
    prediction = [sum(row) for row in data]
    return Response(json.dumps(prediction, separators=(",", ":")), mimetype="application/json")
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"seconds\\": %%f, \\"errors\\": %%d, \\"non2xx\\": %%d, " ..
    "\\"p50_us\\": %%f, \\"p99_us\\": %%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


# -- servers -----------------------------------------------------------------------------


def start_ours(tmp: Path, port: int, workers: int, worker_class: str) -> subprocess.Popen:
    base = tmp / "ml"
    (base / "code").mkdir(parents=True, exist_ok=True)
    (base / "model").mkdir(exist_ok=True)
    (base / "code" / "inference.py").write_text(INFERENCE)
    env = container_env(
        base,
        {
            "ANYJOB_BIND_HOST": "127.0.0.1",
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
            "ANYJOB_SERVE_WORKER_CLASS": worker_class,
        },
    )
    return start([sys.executable, "-m", "anyjob_container", "serve"], env=env, **_quiet())


def start_baseline(tmp: Path, port: int, workers: int, worker_class: str) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "flask_baseline.py").write_text(FLASK_APP)
    cmd = [
        *(sys.executable, "-m", "gunicorn", "--chdir", str(tmp), "--no-control-socket"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", worker_class),
        *("--keep-alive", str(KEEPALIVE), "--log-level", "warning"),
        # As ours: threads only for gthread (gunicorn quietly turns sync with threads into gthread).
        *(("--threads", str(THREADS)) if worker_class == "gthread" else ()),
        "flask_baseline:app",
    ]
    env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
    return start(cmd, env=env, **_quiet())


def _quiet() -> dict:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    wait_for_port(port, timeout, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = request(port, "GET", "/ping")
        if status == 200:
            status, body = request(port, "POST", "/invocations", BODY)
            if status != 200 or body.decode() != EXPECTED:
                raise RuntimeError(f"port {port} answered {status} {body[:200]!r}, expected {EXPECTED}")
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not become healthy")


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


# -- load generators ---------------------------------------------------------------------


def run_wrk(port: int, connections: int, seconds: float, script: Path) -> Result:
    threads = min(2, connections)
    out = subprocess.run(
        [
            *("wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"),
            *("--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/invocations"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    data = json.loads(line[len("RESULT ") :])
    return Result(
        rps=data["requests"] / data["seconds"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"] + data["non2xx"],
    )


def _python_client(port: int, deadline: float, out: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    while time.monotonic() < deadline:
        start_at = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body=BODY, headers=headers)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            conn.close()
            ok = False
        out.append(time.perf_counter() - start_at)
        if not ok:
            errors.append(1)


def _python_process(port: int, threads: int, seconds: float, queue: multiprocessing.Queue) -> None:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[int] = []
    workers = [
        threading.Thread(target=_python_client, args=(port, deadline, latencies, errors))
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((latencies, len(errors)))


def run_python(port: int, connections: int, seconds: float) -> Result:
    """Fallback: keep-alive connections from threads in two processes (slower than wrk)."""
    procs_n = 2
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_python_process, args=(port, connections // procs_n, seconds, queue))
        for _ in range(procs_n)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(lat for lats, _ in results for lat in lats)
    return Result(
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        errors=sum(e for _, e in results),
    )


# -- main --------------------------------------------------------------------------------


def measure(port: int, args: argparse.Namespace, script: Path | None) -> Result:
    if script is not None:
        run_wrk(port, args.connections, args.warmup, script)
        return run_wrk(port, args.connections, args.duration, script)
    run_python(port, args.connections, args.warmup)
    return run_python(port, args.connections, args.duration)


def bench_class(worker_class: str, args: argparse.Namespace, tmp: Path, script: Path | None) -> tuple:
    results = {}
    for name, starter in (("anyjob serve", start_ours), ("flask baseline", start_baseline)):
        port = free_port()
        proc = starter(tmp / f"{worker_class}-{port}", port, args.workers, worker_class)
        try:
            wait_ready(port, proc)
            results[name] = measure(port, args, script)
        finally:
            stop(proc)
    return results["anyjob serve"], results["flask baseline"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=cpu_count())
    parser.add_argument(
        "--worker-class",
        choices=[*WORKER_CLASSES, "both"],
        default=WORKER_CLASSES[0],
        help=f"gunicorn worker class for both servers (ours defaults to {WORKER_CLASSES[0]})",
    )
    parser.add_argument("--python-client", action="store_true", help="use the Python load generator")
    args = parser.parse_args()

    classes = list(WORKER_CLASSES) if args.worker_class == "both" else [args.worker_class]
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = "wrk" if use_wrk else "python (wrk not found: sudo apt-get install wrk)"
    print(
        f"serve throughput: {args.workers} workers, {args.connections} connections, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up, load from {generator}"
    )
    summary = {}
    with tempfile.TemporaryDirectory(prefix="anyjob-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = None
        if use_wrk:
            script = tmp / "post.lua"
            script.write_text(WRK_SCRIPT % BODY)
        for worker_class in classes:
            ours, base = bench_class(worker_class, args, tmp, script)
            ratio = ours.rps / base.rps if base.rps else float("inf")
            ok_ratio, ok_p99 = ratio >= TARGET_RATIO, ours.p99_ms <= TARGET_P99_MS
            summary[worker_class] = {
                "ours_rps": round(ours.rps),
                "baseline_rps": round(base.rps),
                "ratio": round(ratio, 2),
                "ours_p99_ms": round(ours.p99_ms, 2),
                "baseline_p99_ms": round(base.p99_ms, 2),
            }
            print(f"\nworker class {worker_class}:")
            print(f"  {'':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
            for name, r in (("anyjob serve", ours), ("flask baseline", base)):
                print(f"  {name:16} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}")
            print(f"  ratio ours/baseline: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x) {_verdict(ok_ratio)}")
            print(f"  p99 ours: {ours.p99_ms:.2f} ms (target <= {TARGET_P99_MS:g} ms) {_verdict(ok_p99)}")
    print(json.dumps(summary))
    return 0


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
