"""``{% metric_charts job %}``: the job page's metric charts (``templates/jobs/_metrics.html``).

A tag rather than more context in ``jobs.views.job_detail``: the charts' two queries (the job's
series, and its rank among the jobs of its entry point) stay with the charts.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from jobs.charts import direction_words, ranks
from jobs.models import MetricSeries, TrainingJob

register = template.Library()


@register.inclusion_tag("jobs/_metrics.html")
def metric_charts(job: TrainingJob) -> dict[str, Any]:
    series = list(MetricSeries.objects.filter(job_id=job.pk).order_by("name"))
    by_name = {s.name: s for s in series}
    # Defined metrics with no point yet get their (empty) chart at once; the charts' script adds
    # the chart of a metric that appears later.
    names = list(by_name)
    for definition in job.metric_definitions or []:
        name = definition.get("name") if isinstance(definition, dict) else None
        if isinstance(name, str) and name and name not in by_name:
            names.append(name)
    placed = ranks(job, series)
    metrics = [
        {
            "name": name,
            "series": by_name.get(name),
            "rank": placed.get(name),
            "direction": direction_words(name),
        }
        for name in names
    ]
    return {
        "job": job,
        "metrics": metrics,
        "final": job.status in TrainingJob.FINAL,
        "data_url": reverse("job_metrics", args=[job.name]),
    }
