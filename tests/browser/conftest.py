"""Browser tests: Debian's Chromium, driven by Playwright, against the whole real stack.

``stack`` is anyjob started the way ``make run`` starts it (``python -m webapp.run``: migrate,
``ensure_admin``, the embedded redis-server, Celery worker and beat, the web server) on a free
port, with its own ``var/`` folder (SQLite database, Redis socket, artifacts) in a temporary
directory. The tests talk to it only through the browser and ``stack.create_user``: it is
another process with its own database, so browser tests never use pytest-django's ``db`` or
``live_server`` (and must not: while Playwright's sync API is alive, an asyncio loop is
marked running in this thread, and Django refuses database access from it with
``SynchronousOnlyOperation``).

``browser`` is ``/usr/bin/chromium`` (Debian's package, installed by ``.ci/sysdeps.sh``);
Playwright never downloads a browser of its own. ``page`` is a fresh browser context per
test, with ``stack.base_url`` as its base URL (``page.goto("/jobs/")`` works).

Both ``stack`` and ``browser`` are started once for all the tests in this folder and stopped
as soon as the last of them has run (package scope), so that neither runs, nor keeps the
asyncio loop marked running, during the rest of the suite.

Screenshots (``shot``) go to ``test-output/browser/<module>.<test>/NN-name.png`` under the
repository root, for a human to look at after ``make test``; a failing test gets one more,
``NN-failure.png``. The stack's output is in ``test-output/browser/stack.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import alive, free_port, start, wait_for_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUTPUT = ROOT / "test-output" / "browser"
#: The image environment the rest of the suite builds once (tests/settings.py): a local job
#: run by the stack reuses it instead of building its own (about 15 s).
IMAGE_ENV_CACHE = ROOT / "var" / "test-cache" / "image"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in CI, where Chromium's own sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No traffic of its own: the machine reaches only package registries.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOT_INSTALLED = (
    f"Chromium is not installed ({CHROMIUM} is missing), so the browser tests were skipped. "
    "Install it with `sudo apt-get install chromium`, or run `make test` as root "
    "(.ci/sysdeps.sh installs it)."
)

#: Variables that point at some other state (the suite's own var/, a database, a Redis):
#: the stack gets its own instead.
STATE_VARIABLES = {
    "ANYJOB_VAR_DIR",
    "ANYJOB_LOCAL_ROOT",
    "ANYJOB_ARTIFACT_STORE",
    "ANYJOB_ADMIN_PASSWORD",
    "ANYJOB_PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0  # the launcher gives its children 10 s, then kills them
WORKER_READY = re.compile(r"^worker +\| .*\bready\.", re.MULTILINE)

CALL_REPORT = pytest.StashKey[pytest.TestReport]()


# --- marks, skips and failure screenshots -----------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before -m selects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is ``browser`` and ``slow``, and skipped without Chromium."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
            if not CHROMIUM.exists():
                item.add_marker(pytest.mark.skip(reason=NOT_INSTALLED))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report  # for ``page``'s teardown: screenshot on failure
    return report


# --- the stack -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass
class Stack:
    """anyjob running as ``make run`` runs it (see the module docstring)."""

    base_url: str  # http://127.0.0.1:PORT (no trailing slash)
    port: int
    var_dir: Path  # ANYJOB_VAR_DIR: the SQLite database, var/redis/, artifacts, job dirs
    admin_username: str
    admin_password: str
    env: dict[str, str]  # the launcher's environment; manage() runs with it too
    log_path: Path
    process: subprocess.Popen

    @property
    def admin(self) -> Account:
        return Account(self.admin_username, self.admin_password)

    def url(self, path: str = "/") -> str:
        return self.base_url + "/" + path.lstrip("/")

    def log(self) -> str:
        """Everything the launcher and its children printed so far (prefixed by name)."""
        return self.log_path.read_text(errors="replace")

    def manage(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """``manage.py ARGS`` against the stack's database; its output (fails on an error)."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def create_user(
        self, username: str, password: str, staff: bool = False, superuser: bool = False
    ) -> Account:
        """A new account in the stack's database (about 1 s: one ``manage.py shell``)."""
        self.manage(
            "shell",
            "--no-imports",
            "-c",
            CREATE_USER,
            extra_env={
                "BROWSER_TEST_USERNAME": username,
                "BROWSER_TEST_PASSWORD": password,
                "BROWSER_TEST_STAFF": "1" if staff or superuser else "",
                "BROWSER_TEST_SUPERUSER": "1" if superuser else "",
            },
        )
        return Account(username, password)


# Values travel in the environment, so no quoting of user names or passwords is involved.
CREATE_USER = """
import os
from django.contrib.auth import get_user_model
get_user_model().objects.create_user(
    os.environ["BROWSER_TEST_USERNAME"],
    password=os.environ["BROWSER_TEST_PASSWORD"],
    is_staff=bool(os.environ["BROWSER_TEST_STAFF"]),
    is_superuser=bool(os.environ["BROWSER_TEST_SUPERUSER"]),
)
"""


def stack_env(var_dir: Path, port: int, password: str) -> dict[str, str]:
    """This process's environment, less what points at other state, plus the stack's own.

    So the stack also gets what tests/settings.py sets for the suite: heartbeats every 0.2 s,
    a 5 s stop grace, ``ANYJOB_LOCAL_FILE_ROOTS`` (the temporary folder and the examples).
    """
    env = {k: v for k, v in os.environ.items() if k not in STATE_VARIABLES}
    env.update(
        ANYJOB_VAR_DIR=str(var_dir),
        ANYJOB_PORT=str(port),
        ANYJOB_ADMIN_PASSWORD=password,
        # tests/settings.py has already set it in this process (unless it was set before).
        ANYJOB_IMAGE_ENV_ROOT=os.environ.get("ANYJOB_IMAGE_ENV_ROOT", str(IMAGE_ENV_CACHE)),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        PYTHONUNBUFFERED="1",
    )
    # Inherited from tests/settings.py unless set: a stop takes 5 s, not 120.
    env.setdefault("ANYJOB_LOCAL_STOP_GRACE_SECONDS", "5")
    return env


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def processes_of(var_dir: Path) -> set[int]:
    """Live processes started with ``ANYJOB_VAR_DIR=var_dir``: the stack's, and the training
    jobs it started (detached by design: they belong to no one, so only this finds them)."""
    marker = f"ANYJOB_VAR_DIR={var_dir}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                    found.add(int(entry.name))
    return found


def wait_until_gone(pids: set[int], timeout: float) -> set[int]:
    """The ones still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_for_worker(launcher: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not WORKER_READY.search(tail(log_path, 10**6)):
        if launcher.poll() is not None:
            raise RuntimeError(f"anyjob exited with {launcher.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Celery worker was not ready within {timeout:g}s")
        time.sleep(0.1)


def stop_stack(launcher: subprocess.Popen, var_dir: Path) -> list[str]:
    """Ctrl-C to the launcher, as a person would; what went wrong (nothing is left running)."""
    problems = []
    tree = descendants(launcher.pid)
    if launcher.poll() is not None:
        problems.append(f"anyjob had already exited with {launcher.returncode}")
    else:
        launcher.send_signal(signal.SIGINT)
        try:
            if launcher.wait(STOP_TIMEOUT) != 0:
                problems.append(f"anyjob exited with {launcher.returncode} on Ctrl-C")
        except subprocess.TimeoutExpired:
            problems.append(f"anyjob did not stop within {STOP_TIMEOUT:g}s of Ctrl-C: killed")
            launcher.kill()
            launcher.wait()
    left = wait_until_gone(tree, 5)
    if left:
        problems.append(f"processes left running after anyjob stopped (killed): {sorted(left)}")
        kill(left, signal.SIGKILL)
    # Training jobs outlive the web app by design (their own sessions, no parent): not a
    # problem, but nothing may outlive the tests. SIGTERM stops one gracefully (5 s grace).
    jobs = processes_of(var_dir) - tree
    kill(jobs, signal.SIGTERM)
    kill(wait_until_gone(jobs, 10), signal.SIGKILL)
    if wait_until_gone(tree | jobs | processes_of(var_dir), 5):
        problems.append("processes survived SIGKILL")
    release_leftovers(var_dir)
    return problems


def release_leftovers(var_dir: Path) -> None:
    """What a killed job or endpoint process would have released itself: its volume's mount and
    its cgroup, with what is left in it (pasta). The reaper does this when anyjob next looks at
    an abandoned job (``reaping.release_root``); a stopped test stack never looks again."""
    from jobs.backends.local.endpoint_host import cgroup_name
    from jobs.backends.local.reaping import release_root, remove_cgroup

    local = var_dir / "local-sagemaker"
    for root in sorted(local.iterdir()) if local.is_dir() else ():
        if root.is_dir() and not root.name.startswith("_"):
            release_root(root)
    endpoints = local / "_endpoints"
    for root in sorted(endpoints.iterdir()) if endpoints.is_dir() else ():
        remove_cgroup(cgroup_name(root.name.rsplit("-", 1)[0], root))  # <key>-<uid>


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """anyjob as ``make run`` runs it, on a free port, with its own var/ folder."""
    yield from run_stack(tmp_path_factory.mktemp("browser-stack") / "var", OUTPUT)


def run_stack(var_dir: Path, output: Path, *, client_env: bool = True) -> Iterator[Stack]:
    """Start ``python -m webapp.run`` over ``var_dir`` (its log in ``output``/stack.log), yield
    it once its worker is ready, then Ctrl-C it and fail the test on whatever it left behind.
    ``client_env=False`` drops the AWS_* variables: a server that is no client of anything."""
    port, password = free_port(), secrets.token_urlsafe(16)
    env = stack_env(var_dir, port, password)
    if not client_env:
        for name in [k for k in env if k.startswith("AWS_")]:
            del env[name]
    output.mkdir(parents=True, exist_ok=True)
    log_path = output / "stack.log"
    started = time.monotonic()
    log_path.write_bytes(b"")
    with log_path.open("ab") as out:  # O_APPEND: the tests add lines of their own to it
        # PR_SET_PDEATHSIG: the launcher (and so its children) dies with pytest.
        launcher = start(
            [sys.executable, "-m", "webapp.run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout=START_TIMEOUT, proc=launcher)
        web_ready = time.monotonic() - started
        # A job submitted by the first test is picked up at once, not after a cold start.
        wait_for_worker(launcher, log_path, START_TIMEOUT - web_ready)
    except BaseException as error:
        stop_stack(launcher, var_dir)
        if isinstance(error, RuntimeError | TimeoutError):
            raise RuntimeError(f"{error}\n--- {log_path} ---\n{tail(log_path)}") from None
        raise
    ready = time.monotonic() - started
    with log_path.open("a") as out:
        out.write(f"tests  | web answered after {web_ready:.1f}s, all ready after {ready:.1f}s\n")
    yield Stack(
        base_url=f"http://127.0.0.1:{port}",
        port=port,
        var_dir=var_dir,
        admin_username="admin",
        admin_password=password,
        env=env,
        log_path=log_path,
        process=launcher,
    )
    problems = stop_stack(launcher, var_dir)
    if problems:
        pytest.fail("; ".join(problems) + f"\n--- {log_path} ---\n{tail(log_path)}", pytrace=False)


# --- the browser -----------------------------------------------------------------------------


def chromium_args() -> list[str]:
    args = list(CHROMIUM_ARGS)
    # A small /dev/shm (Docker's 64 MB) crashes tabs: use /tmp instead.
    with contextlib.suppress(OSError):
        if shutil.disk_usage("/dev/shm").free < 1024**3:
            args.append("--disable-dev-shm-usage")
    return args


@pytest.fixture(scope="package")
def browser():
    """Debian's Chromium, headless, driven by Playwright's sync API."""
    if not CHROMIUM.exists():
        pytest.skip(NOT_INSTALLED)
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        pytest.fail(
            "an asyncio loop is already running in this thread (another Playwright instance or an "
            "async plugin?): Playwright's sync API cannot start inside it",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args()
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, stack: Stack, request: pytest.FixtureRequest):
    """A fresh page in a fresh context (no cookies), with ``stack.base_url`` as base URL."""
    context = browser.new_context(
        base_url=stack.base_url,
        viewport={"width": 1280, "height": 800},
        locale="en-US",
        timezone_id="UTC",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        report = request.node.stash.get(CALL_REPORT, None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                shot(page, request, "failure")
        context.close()


# --- helpers for the tests -------------------------------------------------------------------

_shots: dict[Path, int] = {}


def output_dir(request: pytest.FixtureRequest) -> Path:
    """``test-output/browser/<module>.<test>/`` for the running test."""
    nodeid = request.node.nodeid
    relative = nodeid.split("tests/browser/", 1)[-1].replace(".py::", ".").replace("::", ".")
    return OUTPUT / re.sub(r"[^A-Za-z0-9_.=-]+", "_", relative).strip("_")


def shot(page, request_or_dir: pytest.FixtureRequest | Path | str, name: str) -> Path:
    """Save a full-page screenshot as ``NN-name.png`` in the test's output folder (or the one
    given) and return its path. The folder's old screenshots go at the first shot of a run."""
    where = request_or_dir
    folder = Path(where) if isinstance(where, str | Path) else output_dir(where)
    if folder not in _shots:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("[0-9][0-9]-*.png"):
            old.unlink()
        _shots[folder] = 0
    _shots[folder] += 1
    path = folder / f"{_shots[folder]:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}.png"
    page.screenshot(path=path, full_page=True)
    return path


def sign_in(page, base_url: str, username: str, password: str) -> None:
    """Sign in through the login form. The page stays where it is if it already shows the form
    (so a ``?next=`` is kept), else it opens ``/accounts/login/``. Fails if the sign-in does."""
    login = "/accounts/login/"
    if urlsplit(page.url).path != login:
        page.goto(base_url.rstrip("/") + login)
    form = page.locator(f'form[action="{login}"]')
    form.locator('input[name="username"]').fill(username)
    form.locator('input[name="password"]').fill(password)
    with page.expect_navigation():
        form.locator('button[type="submit"]').click()
    if urlsplit(page.url).path == login:
        errors = page.locator(".errors").all_inner_texts()
        raise AssertionError(f"signing in as {username!r} failed: {' '.join(errors) or page.url}")
