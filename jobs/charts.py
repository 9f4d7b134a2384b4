"""What the metric charts need besides the points: which way each metric is better, and where a
completed job ranks among the jobs of its entry point.

The points themselves come from ``jobs.metrics`` (``metrics.json``); the charts are drawn in the
browser (``static/metrics.js``, uPlot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Count, Q

from jobs.models import MetricSeries, TrainingJob

#: A metric whose name holds one of these words is better when lower; any other, when higher.
#: Case-insensitive, anywhere in the name (``val_loss``, ``train-error``, ``RMSE``); the short ones
#: (``err``, ``wer``, ``cer``, ``ppl``) only as a word of their own (``answer`` is not ``wer``).
LOWER_IS_BETTER = re.compile(
    r"loss|error|mse|mae|rmse|mape|perplexity|(?<![a-z])(?:err|wer|cer|ppl)(?![a-z])", re.IGNORECASE
)


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of metric ``name`` is the better one (loss, error, MSE, …)."""
    return bool(LOWER_IS_BETTER.search(name))


def direction_words(name: str) -> str:
    """``"lower is better"`` or ``"higher is better"``, as the pages say it."""
    return "lower is better" if lower_is_better(name) else "higher is better"


@dataclass(frozen=True)
class Rank:
    """This job's place among the completed jobs of the same entry point, by a metric's last value."""

    metric: str
    place: int  # 1-based; ties share the better place
    total: int
    lower: bool

    @property
    def text(self) -> str:
        best = "lowest" if self.lower else "highest"
        return f"{ordinal(self.place)} of {self.total} by {best} {self.metric} (last value)"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, …"""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ranks(job: TrainingJob, series: list[MetricSeries]) -> dict[str, Rank]:
    """Metric name → this job's rank on it, for a Completed job (``{}`` otherwise).

    One query whatever the number of metrics or jobs: the series of the same names, of
    completed jobs of the same entry point, grouped by name, each counted twice (all of them,
    and those strictly better than this job's last value). The ``(name, last, job)`` index
    serves the name and value conditions.
    """
    if job.status != TrainingJob.Status.COMPLETED:
        return {}
    mine = {s.name: s.last for s in series if s.last is not None}
    if not mine:
        return {}
    better = Q()
    for name, value in mine.items():
        better |= Q(name=name, last__lt=value) if lower_is_better(name) else Q(name=name, last__gt=value)
    rows = (
        MetricSeries.objects.filter(
            name__in=list(mine),
            last__isnull=False,
            job__entry_point=job.entry_point,
            job__status=TrainingJob.Status.COMPLETED,
        )
        .values("name")
        .annotate(total=Count("id"), better=Count("id", filter=better))
        .order_by()
    )
    return {
        row["name"]: Rank(row["name"], row["better"] + 1, row["total"], lower_is_better(row["name"]))
        for row in rows
    }
