"""A local job's or endpoint's output as CloudWatch-shaped log events (``LogEvent`` rows).

One writer for both: lines are kept in memory until the row is ``attach``-ed (a job's process
starts its container before Django is set up), then written in batches, bounded to the newest
``max_events``. A job's writer also picks out its ``MetricDefinitions`` (``jobs.metrics``:
each line matched in bounded time) and writes every capture with its time as
``LocalMetricBatch`` rows, in the same flushes; an endpoint's keeps the current server's last
lines (``tail``) for its FailureReason.

No Django at import time: the job's and the endpoint's processes import this before it is set up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from jobs import metrics as job_metrics

log = logging.getLogger("anyjob.local.logs")

MAX_LINE = 16 * 1024  # longer log lines are cut (CloudWatch's own limit is 256 KiB)
CUT = " [... line cut by anyjob ...]"
FLUSH_SECONDS = 0.5
FLUSH_LINES = 500


def bounded_lines(stream: Any, limit: int = MAX_LINE) -> Iterator[str]:
    """The lines of a job's output, each read with a bound: a line longer than ``limit``
    bytes is cut there (the rest of it skipped), so output without newlines cannot grow
    anyjob's memory."""
    while raw := stream.readline(limit + 1):
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass  # the rest of the long line, read and dropped in bounded pieces
            yield raw[:limit].decode("utf-8", "replace") + CUT
            continue
        yield raw.decode("utf-8", "replace").rstrip("\n")


class LogWriter:
    """One log stream of a job or an endpoint.

    ``flush_on_add``: a job's writer writes a batch from whichever thread adds the line that
    makes one due (its pump closes its database connection when the output ends); an
    endpoint's leaves all writing to its main thread's ``flush_if_due``.
    ``metric_definitions`` (a job's ``MetricDefinitions``) are picked out of every line;
    ``tail_lines`` of the newest lines are kept in ``tail``.
    """

    def __init__(
        self,
        stream: str,
        max_events: int,
        *,
        flush_on_add: bool,
        metric_definitions: Iterable[dict[str, Any]] = (),
        tail_lines: int = 0,
    ) -> None:
        self.stream = stream
        self.max_events = max_events
        self.flush_on_add = flush_on_add
        self.events: Any = None  # the LogEvent model, once attached
        self.owner: dict[str, Any] | None = None  # the events' foreign key, once attached
        self.pending: list[tuple[int, str]] = []
        self.seq = 0
        self.lock = threading.Lock()  # guards pending and tail
        self.writing = threading.Lock()  # one batch at a time, in order
        self.last_flush = time.monotonic()
        self.ended = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.matcher = job_metrics.Matcher(list(metric_definitions))
        self.metric_batches: Any = None  # the LocalMetricBatch model, once attached
        #: Each metric's last value and its time: FinalMetricDataList.
        self.metrics: dict[str, tuple[float, int]] = {}
        #: Points captured and not yet written, and steps written so far, per metric.
        self.metric_pending: dict[str, list[tuple[int, float]]] = {}
        self.metric_steps: dict[str, int] = {}
        self.noted = 0  # matcher problems already written to the log
        self.recorded = 0  # and on the job's notes
        self._note_problems(int(time.time() * 1000))

    def attach(self, events: Any, owner: dict[str, Any]) -> None:
        """Write from now on: ``events`` (a ``LogEvent`` model) rows with ``owner`` (their
        foreign key, e.g. ``{"job": job}``), continuing the log where an earlier process of
        the same owner stopped (a restarted endpoint host)."""
        from django.db.models import Max

        self.seq = events.objects.filter(**owner).aggregate(m=Max("seq"))["m"] or 0
        if self.matcher.defs:
            from jobs.backends.local.models import LocalMetricBatch

            self.metric_batches = LocalMetricBatch
        self.events, self.owner = events, owner
        self.flush()

    def add(self, line: str) -> None:
        stamp = int(time.time() * 1000)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + CUT
        captures = self.matcher.match(line) if self.matcher.defs else ()
        with self.lock:
            for c in captures:
                if c.value is not None:
                    self.metrics[c.name] = (c.value, stamp)
                    self.metric_pending.setdefault(c.name, []).append((stamp, c.value))
            self.pending.append((stamp, line))
            self.tail.append(line)
        if len(self.matcher.problems) > self.noted:
            self._note_problems(stamp)
        if self.flush_on_add:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self.pending and (
            len(self.pending) >= FLUSH_LINES or time.monotonic() - self.last_flush > FLUSH_SECONDS
        ):
            self.flush()

    def pump(self, stream: Any, ended: threading.Event | None = None) -> None:
        """Read a process's output until it closes (a thread of its own), then set ``ended``
        (``self.ended`` by default)."""
        try:
            for line in bounded_lines(stream):
                self.add(line)
            if self.flush_on_add:
                self.flush()
        except (OSError, ValueError):
            pass  # the stream was closed under us (the process was stopped)
        finally:
            (ended or self.ended).set()
            if self.flush_on_add and self.owner is not None:
                from django.db import connection

                connection.close()

    def wait_for_end(self) -> None:
        self.ended.wait(timeout=10)
        self.flush()

    def _note_problems(self, stamp: int) -> None:
        """What the matcher gave up on (a regex that does not compile, one that timed out too
        often), as the job's own log lines: a cut is recorded where the user looks."""
        with self.lock:
            for problem in self.matcher.problems[self.noted :]:
                self.pending.append((stamp, f"anyjob: {problem}"))
            self.noted = len(self.matcher.problems)

    def flush(self) -> None:
        if self.owner is None:
            return  # not written before the row is ours; memory holds it meanwhile
        with self.writing:
            with self.lock:
                batch, self.pending = self.pending, []
                points, self.metric_pending = self.metric_pending, {}
                self.last_flush = time.monotonic()
            if batch:
                self.seq = self.events.store_batch(self.owner, self.stream, batch, self.seq, self.max_events)
            if points and self.metric_batches is not None:
                self._store_points(points)
            if self.metric_batches is not None and len(self.matcher.problems) > self.recorded:
                self._record_problems()

    def _record_problems(self) -> None:
        """The matcher's problems on the job too (``notes``, shown with the job): its log is
        bounded to the newest lines, and a metric no longer read must stay said."""
        from django.db import transaction

        job = self.owner["job"] if self.owner else None
        if job is None:
            return
        new = self.matcher.problems[self.recorded :]
        with transaction.atomic():
            row = type(job).objects.select_for_update().get(pk=job.pk)
            row.notes = [*row.notes, *(f"MetricDefinitions: {p}" for p in new)]
            row.save(update_fields=["notes"])
        self.recorded += len(new)

    def _store_points(self, points: dict[str, list[tuple[int, float]]]) -> None:
        """One row per metric for this flush; past ``MAX_POINTS`` the metric's one bounded row
        (``first_step`` = bound + 1) counts them and keeps the newest."""
        rows = []
        bound = job_metrics.MAX_POINTS
        for name, pts in points.items():
            done = self.metric_steps.get(name, 0)
            room = max(0, bound - done)
            kept, rest = pts[:room], pts[room:]
            if kept:
                rows.append(
                    self.metric_batches(
                        **self.owner,
                        name=name,
                        first_step=done + 1,
                        count=len(kept),
                        points=job_metrics.pack_points(kept),
                    )
                )
            if rest:
                newest = job_metrics.pack_points(rest[-1:])
                tail, created = self.metric_batches.objects.get_or_create(
                    **self.owner,
                    name=name,
                    first_step=bound + 1,
                    defaults={"count": 1, "dropped": len(rest) - 1, "points": newest},
                )
                if not created:
                    tail.dropped += tail.count + len(rest) - 1
                    tail.count = 1
                    tail.points = newest
                    tail.save(update_fields=["dropped", "count", "points"])
            self.metric_steps[name] = done + len(pts)
        if rows:
            self.metric_batches.objects.bulk_create(rows)

    def final_metrics(self) -> list[dict[str, Any]]:
        return [
            {
                "MetricName": name,
                "Value": value,
                "Timestamp": datetime.fromtimestamp(stamp / 1000, UTC).isoformat(),
            }
            for name, (value, stamp) in sorted(self.metrics.items())
        ]
