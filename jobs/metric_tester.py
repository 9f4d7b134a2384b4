"""The metric tester of the new-job page: each metric definition run, as the user types, against
lines pasted into the page or the log of an earlier job, showing what each one captures.

What an expression captures, and the warnings about it (not a number, an exponent AWS would drop,
a line that took too long), come from ``jobs.metrics`` — the same functions the emulator's log
reader uses — so the tester shows what a job will record. This module bounds what it is given
(lines, bytes, characters a line) and says so when it cuts; nothing typed here can fail the
page: a bad expression is a message on its row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.http import require_POST

from jobs import detail, metrics
from jobs.forms import MetricDefinitionFormSet
from jobs.models import TrainingJob
from jobs.redact import secrets_of

#: Lines tested at most (pasted, or the end of a job's log), and pasted bytes read at most:
#: ``jobs.metrics.test_lines``'s own bounds, said here before it cuts.
MAX_LINES = metrics.TEST_MAX_LINES
MAX_BYTES = metrics.TEST_MAX_BYTES
#: A longer line is matched on its first characters only (as a job's log is: ``metrics.MAX_LINE``).
MAX_LINE_CHARS = metrics.MAX_LINE
#: What the lines box takes (characters): the bytes bound, for text that is all ASCII.
MAX_PASTE_CHARS = MAX_BYTES
#: Characters of a line the results show (the capture itself is shown as test_lines gives it).
SHOWN_LINE_CHARS = 200
#: A job name as the form's field takes it (``jobs.forms.JOB_NAME``), checked before any query.
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")

#: A number as scripts print it, exponent included (``7e-05`` is 7e-05, not 7), in one group.
NUMBER = r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class Preset:
    """A common way scripts print metrics: rows it fills (one per name) and a line it reads."""

    key: str
    label: str
    #: ``{name}`` is the metric's name, regex-escaped.
    template: str
    names: tuple[str, ...]
    example: str

    def regex(self, name: str) -> str:
        return self.template.replace("{name}", re.escape(name)).replace("{number}", NUMBER)


PRESETS = (
    Preset(
        "equals",
        "name=value",
        r"\b{name}={number}",
        ("loss", "lr"),
        "epoch 3 step 1200: loss=0.3512 lr=7e-05",
    ),
    Preset("colon", "name: value", r"\b{name}: *{number}", ("loss",), "Epoch 3 loss: 0.3512 accuracy: 0.91"),
    Preset(
        "huggingface",
        "Hugging Face Trainer",
        r"'{name}': {number}",
        ("loss", "learning_rate", "epoch", "eval_loss"),
        "{'loss': 0.35, 'learning_rate': 5e-05, 'epoch': 1.0}",
    ),
    Preset(
        "keras",
        "Keras progress",
        r" - {name}: {number}",
        ("loss", "accuracy", "val_loss", "val_accuracy"),
        "750/750 [==============================] - 3s 4ms/step - loss: 0.2513 - accuracy: 0.9279",
    ),
)


def preset_data() -> list[dict[str, Any]]:
    """The presets as the page's script takes them (``json_script``)."""
    return [
        {
            "key": p.key,
            "label": p.label,
            "example": p.example,
            "rows": [{"name": n, "regex": p.regex(n)} for n in p.names],
            "template": p.template.replace("{number}", NUMBER),
        }
        for p in PRESETS
    ]


def typed_definitions(data: QueryDict) -> tuple[list[dict[str, str]], list[int], str | None]:
    """The rows as typed so far (filled, not removed): ``[{"name", "regex"}]``, each row's form
    index, and a message when the table itself cannot be read (a page from another version)."""
    table = MetricDefinitionFormSet(data, prefix="md")
    if not table.management_form.is_valid():
        return [], [], "The form is incomplete: reload the page."
    definitions, indexes = [], []
    for i, form in enumerate(table.forms):
        name = (data.get(form.add_prefix("name")) or "").strip()
        regex = data.get(form.add_prefix("regex")) or ""
        if data.get(form.add_prefix("DELETE")) or not (name or regex):
            continue
        definitions.append({"name": name[: metrics.MAX_NAME + 1], "regex": regex[: metrics.MAX_REGEX + 1]})
        indexes.append(i)
    return definitions, indexes, None


def pasted_lines(text: str) -> tuple[list[str], list[str]]:
    """The pasted text's lines, bounded; and what was cut, said plainly."""
    notes = []
    raw = text.encode("utf-8", "replace")
    if len(raw) > MAX_BYTES:
        text = raw[:MAX_BYTES].decode("utf-8", "ignore")
        notes.append(f"Only the first {MAX_BYTES // 1024} KiB of the pasted text were tested.")
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        notes.append(f"Only the first {MAX_LINES:,} of {len(lines):,} pasted lines were tested.")
        lines = lines[:MAX_LINES]
    return lines, notes


def job_lines(name: str) -> tuple[list[str], list[str], str]:
    """The end of job ``name``'s log (secret values hidden, as on its page) and what was cut;
    ``ValueError`` says why there are no lines."""
    if not JOB_NAME.fullmatch(name):
        raise ValueError(f"{name[:70]!r} is not a job name.")
    job = TrainingJob.objects.filter(name=name).first()
    job = job or TrainingJob.objects.filter(name__iexact=name).first()
    if job is None:
        raise ValueError(f"There is no job called {name[:70]!r}.")
    events, _, older = detail.log_tail(job, MAX_LINES)
    events = secrets_of(job).redact(events)
    lines = [line for e in events for line in str(e.get("message", "")).splitlines()][-MAX_LINES:]
    if not lines:
        raise ValueError(f"The job {job.name} has no log (yet): paste some lines instead.")
    notes = [f"Only the last {len(lines):,} lines of {job.name}'s log were tested."] if older else []
    return lines, notes, f"the log of {job.name}"


def cut_long_lines(lines: list[str]) -> tuple[list[str], list[str]]:
    long = [i for i, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARS]
    if not long:
        return lines, []
    shown = ", ".join(str(n) for n in long[:5]) + (", …" if len(long) > 5 else "")
    note = f"Lines longer than {MAX_LINE_CHARS:,} characters were tested on their start only (line {shown})."
    return [line[:MAX_LINE_CHARS] for line in lines], [note]


@login_required
@require_POST
def test_metrics(request: HttpRequest) -> HttpResponse:
    """htmx: what each metric definition captures in the lines given (or a job's log)."""
    return render(request, "jobs/_metric_test.html", tester_context(request.POST))


def tester_context(data: QueryDict) -> dict[str, Any]:
    """The tester's fragment: the notes, where the lines came from, and each row's results."""
    definitions, _, broken = typed_definitions(data)
    if broken:
        return {"tested": False, "notes": [broken]}
    pasted = data.get("mt-lines") or ""
    job = (data.get("mt-job") or "").strip()
    lines: list[str] = []
    notes: list[str] = []
    source = ""
    if pasted.strip():
        lines, notes = pasted_lines(pasted)
        source = f"{len(lines):,} pasted line{'s' if len(lines) != 1 else ''}"
    elif job:
        try:
            lines, notes, source = job_lines(job)
        except ValueError as exc:
            notes = [str(exc)]
    lines, cut = cut_long_lines(lines)
    notes += cut
    if not definitions:
        return {"tested": False, "notes": notes, "empty": "Add a metric (or a preset) to test it."}
    if not lines:
        empty = "" if notes else "Paste a few lines of output, or name a job whose log to read."
        return {"tested": False, "notes": notes, "empty": empty}
    return {"tested": True, "notes": notes, "source": source, "results": results(definitions, lines)}


def results(definitions: list[dict[str, str]], lines: list[str]) -> list[dict[str, Any]]:
    """``jobs.metrics.test_lines``'s rows, each capture with the start of its line to show."""
    rows = metrics.test_lines(definitions, lines)
    for row in rows:
        for capture in row["captures"]:
            line = lines[capture["line"] - 1]
            capture["excerpt"] = line[:SHOWN_LINE_CHARS] + ("…" if len(line) > SHOWN_LINE_CHARS else "")
        row["errors"] = [p for p in row["problems"] if p["level"] == "error"]
        row["warnings"] = [p for p in row["problems"] if p["level"] != "error"]
    return rows


def form_context(parent_name: str) -> dict[str, Any]:
    """What the new-job page needs for its metrics box: the presets, and job names to offer the
    tester (the clone's parent first, then the latest jobs: every user sees every job)."""
    names = list(TrainingJob.objects.order_by("-created_at", "-id").values_list("name", flat=True)[:20])
    if parent_name:
        names = [parent_name, *[n for n in names if n != parent_name]]
    return {"metric_presets": preset_data(), "tester_jobs": names, "tester_max_chars": MAX_PASTE_CHARS}
