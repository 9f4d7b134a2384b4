"""jobs.metrics: parsing, definition checks (Python and AWS's dialect), bounded matching, the
tester, and storage (bound, chunks, downsampling that keeps each bucket's min and max)."""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from jobs import metrics
from jobs.models import MetricChunk, MetricSeries, TrainingJob

# ------------------------------------------------------------ parse_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7e-05", 7e-05),
        ("-1.5E+3", -1500.0),
        (".5", 0.5),
        ("+2", 2.0),
        ("3.", 3.0),
        ("  0.25 ", 0.25),
        ("1e3", 1000.0),
        ("-0", 0.0),
        ("123456789012", 123456789012.0),
    ],
)
def test_numbers_with_signs_and_exponents(text, value):
    assert metrics.parse_value(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e999",
        "",
        "e5",
        "1,5",
        "0x10",
        "1_000",
        "loss",
        "1.2.3",
        "--1",
    ],
)
def test_not_numbers_are_refused(text):
    assert metrics.parse_value(text) is None
    assert metrics.value_problem(text)


def test_nan_and_inf_say_they_are_refused():
    assert "refused" in metrics.value_problem("nan")
    assert "refused" in metrics.value_problem("-inf")
    assert "too large" in metrics.value_problem("1e999")
    assert "not a number" in metrics.value_problem("loss")


# ------------------------------------------------------------ check_definitions


def messages(problems, level=None):
    return [p.message for p in problems if level is None or p.level == level]


def test_good_definitions_have_no_problem():
    defs = [
        {"name": "loss", "regex": r"loss=([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"},
        {"Name": "acc", "Regex": r"acc: ([-+0-9.eE]+)"},
    ]
    assert metrics.check_definitions(defs) == []


def test_python_compile_error_is_an_error_of_its_row():
    (p,) = metrics.check_definitions([{"name": "loss", "regex": "loss=([0-9"}])
    assert (p.index, p.field, p.level) == (0, "regex", "error")
    assert p.message.startswith("Does not compile in Python")


def test_no_group_and_nothing_numeric():
    problems = metrics.check_definitions(
        [{"name": "a", "regex": r"loss=\d+"}, {"name": "b", "regex": r"loss=([a-z]+)"}]
    )
    assert [(p.index, p.level) for p in problems] == [(0, "error"), (1, "error")]
    assert "no capture group" in problems[0].message
    assert "cannot capture a number" in problems[1].message


def test_a_group_without_exponent_is_warned():
    (p,) = metrics.check_definitions([{"name": "lr", "regex": r"lr=([0-9\.]+)"}])
    assert p.level == "warning"
    assert "7e-05 would be read as 7" in p.message


def test_duplicate_names_regardless_of_case_too_many_too_long():
    defs = [{"name": "Loss", "regex": r"a=([0-9.eE-]+)"}, {"name": "loss", "regex": r"b=([0-9.eE-]+)"}]
    (p,) = metrics.check_definitions(defs)
    assert (p.index, p.field) == (1, "name")
    assert "row 1" in p.message
    many = [{"name": f"m{i}", "regex": rf"m{i}=([0-9.eE-]+)"} for i in range(41)]
    assert messages(metrics.check_definitions(many)) == [
        "At most 40 metric definitions (SageMaker's limit); 41 given."
    ]
    long = metrics.check_definitions(
        [{"name": "x" * 256, "regex": "(" + "1" * 500 + ")"}, {"name": "", "regex": ""}]
    )
    assert [(p.index, p.field) for p in long] == [(0, "name"), (0, "regex"), (1, "name"), (1, "regex")]
    assert "at most 255" in long[0].message and "at most 500" in long[1].message


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        (r"loss=(?P<v>[0-9.eE-]+)", "(?P<name>…)"),
        (r"(?P<v>[0-9.eE-]+) (?P=v)", "(?P=name)"),
        (r"loss(?#the loss)=([0-9.eE-]+)", "comments"),
        (r"(a)?(?(1)x|y)=([0-9.eE-]+)", "Conditional"),
        (r"loss={,3}([0-9.eE-]+)", "{0,n}"),
        (r"(?a)loss=([0-9.eE-]+)", "inline flags"),
        (r"loss=([0-9.eE-]+)\Z", "\\Z"),
    ],
)
def test_python_only_syntax_is_flagged_for_aws(pattern, said):
    problems = metrics.check_definitions([{"name": "m", "regex": pattern}])
    warnings = messages(problems, "warning")
    assert any(said in w and "AWS" in w for w in warnings), warnings


def test_java_syntax_python_refuses_is_an_error():
    (p,) = metrics.check_definitions([{"name": "m", "regex": r"loss=(?<v>[0-9.eE-]+)"}])
    assert p.level == "error" and "Python" in p.message


def test_escapes_and_classes_are_not_mistaken_for_syntax():
    # "(?P<" inside a class or escaped is not a named group; nor is \\Z escaped.
    assert metrics.aws_dialect_problems(r"[(?P<]x\(?P<\\Z([0-9.eE]+)") == []


def test_catastrophic_regex_is_warned_in_bounded_time():
    started = time.monotonic()
    problems = metrics.check_definitions([{"name": "m", "regex": r"(a|a)+$(\d)"}])
    assert time.monotonic() - started < 2
    assert any("slow on long lines" in m for m in messages(problems, "warning"))


# ------------------------------------------------------------ Matcher / test_lines


def test_matcher_first_match_first_group():
    m = metrics.Matcher([{"Name": "loss", "Regex": r"loss=(\S+)"}, {"Name": "acc", "Regex": r"acc=(\S+)"}])
    caps = m.match("epoch 1 loss=7e-05 acc=nan loss=3")
    assert [(c.name, c.text, c.value) for c in caps] == [("loss", "7e-05", 7e-05), ("acc", "nan", None)]


def test_catastrophic_pattern_on_long_lines_does_not_stall():
    m = metrics.Matcher([{"name": "bad", "regex": r"(a|a)+$"}, {"name": "ok", "regex": r"ok=(\d+)"}])
    line = "a" * 5000 + "! ok=1"
    started = time.monotonic()
    for _ in range(50):
        caps = m.match(line)
    took = time.monotonic() - started
    # Three timeouts of MATCH_SECONDS, then the bad definition is no longer tried.
    assert took < metrics.MAX_TIMEOUTS * metrics.MATCH_SECONDS * 3 + 1
    assert [(c.name, c.value) for c in caps] == [("ok", 1.0)]
    assert any("timed out" in p for p in m.problems)


def test_a_megabyte_line_is_matched_on_its_head_only():
    m = metrics.Matcher([{"name": "loss", "regex": r"loss=([0-9.]+)"}])
    assert m.match("x" * 1_000_000 + " loss=1") == []
    assert [c.value for c in m.match("loss=2 " + "x" * 1_000_000)] == [2.0]


def test_uncompilable_definitions_are_skipped_and_said():
    m = metrics.Matcher([{"name": "bad", "regex": "(["}, {"name": "ok", "regex": r"ok=(\d+)"}])
    assert [c.name for c in m.match("ok=3")] == ["ok"]
    assert "does not compile" in m.problems[0]


def test_tester_shows_captures_and_warnings():
    defs = [
        {"name": "lr", "regex": r"lr=([0-9\.]+)"},
        {"name": "loss", "regex": r"loss=([-+0-9.eE]+|nan)"},
        {"name": "acc", "regex": r"acc=-?([0-9.]+)"},
        {"name": "broken", "regex": "(["},
    ]
    rows = metrics.test_lines(defs, "step 1 lr=7e-05 loss=1.5e-3 acc=-0.5\nstep 2 loss=nan\nnothing here\n")
    lr, loss, acc, broken = rows
    assert [(c["line"], c["text"], c["value"]) for c in lr["captures"]] == [(1, "7", 7.0)]
    assert "stops before the exponent" in lr["captures"][0]["warning"]
    assert "7e-05" in lr["captures"][0]["warning"]
    assert [(c["line"], c["value"]) for c in loss["captures"]] == [(1, 0.0015), (2, None)]
    assert "drop exponents" in loss["captures"][0]["warning"]
    assert "refused" in loss["captures"][1]["warning"]
    assert (loss["count"], loss["numbers"]) == (2, 1)
    assert "leaves out the sign" in acc["captures"][0]["warning"]
    assert broken["captures"] == [] and broken["problems"][0]["level"] == "error"
    assert all(r["lines"] == 3 and r["cut"] == "" for r in rows)


def test_tester_says_where_aws_java_would_capture_otherwise():
    # \d is any Unicode digit in Python, ASCII only in Java: "٣" (Arabic-Indic three).
    (row,) = metrics.test_lines([{"name": "n", "regex": r"n=(\d+)"}], ["n=٣"])
    (cap,) = row["captures"]
    assert cap["value"] == 3.0
    assert "AWS (Java's regex) would capture None" in cap["warning"]


def test_tester_is_bounded():
    defs = [{"name": "bad", "regex": r"(a|a)+$"}, {"name": "n", "regex": r"n=(\d+)"}]
    lines = ["a" * 3000 + "!"] * 10 + [f"n={i}" for i in range(5000)]
    started = time.monotonic()
    bad, n = metrics.test_lines(defs, lines)
    assert time.monotonic() - started < metrics.TEST_SECONDS + 2
    assert n["lines"] == metrics.TEST_MAX_LINES and "first 2,000 lines" in n["cut"]
    assert n["count"] == metrics.TEST_MAX_LINES - 10 and n["shown"] == metrics.TEST_MAX_CAPTURES
    assert any("no longer read" in p["message"] for p in bad["problems"])
    big = metrics.test_lines([{"name": "n", "regex": r"n=(\d+)"}], ["n=1 " + "x" * 100_000] * 5)
    assert big[0]["lines"] == 2 and "KiB" in big[0]["cut"]


# ------------------------------------------------------------ storage


@pytest.fixture
def job(alice):
    return TrainingJob.objects.create(owner=alice, name="metrics-job", entry_point="train.py")


def series_points(job, name):
    s = MetricSeries.objects.get(job=job, name=name)
    out = []
    for first, data in s.chunks.order_by("seq").values_list("first_step", "points"):
        out += [(first + k, ms, v) for k, (ms, v) in enumerate(metrics.unpack_points(data))]
    return out


@pytest.mark.django_db
def test_append_in_batches_fills_chunks_and_keeps_stats(job):
    rng = random.Random(1)
    points = [(1_700_000_000_000 + i, rng.uniform(-5, 5)) for i in range(10_000)]
    done = 0
    for size in (1, 7, 4088, 1, 5000, 903):
        metrics.append_points(job, "loss", points[done : done + size])
        done += size
    s = MetricSeries.objects.get(job=job, name="loss")
    values = [v for _, v in points]
    assert (s.count, s.dropped, s.last, s.min, s.max) == (10_000, 0, values[-1], min(values), max(values))
    assert (s.first_ms, s.last_ms) == (points[0][0], points[-1][0])
    assert list(s.chunks.order_by("seq").values_list("seq", "first_step", "count")) == [
        (0, 1, 4096),
        (1, 4097, 4096),
        (2, 8193, 1808),
    ]
    assert series_points(job, "loss") == [(i + 1, ms, v) for i, (ms, v) in enumerate(points)]


@pytest.mark.django_db
def test_the_bound_moves_only_dropped_and_last(job, monkeypatch):
    monkeypatch.setattr(metrics, "MAX_POINTS", 100)
    metrics.append_points(job, "loss", [(i, float(i)) for i in range(90)])
    kept = metrics.append_points(job, "loss", [(1000 + i, -50.0 + i) for i in range(30)], dropped=5)
    s = MetricSeries.objects.get(job=job, name="loss")
    assert kept == 10
    assert (s.count, s.dropped, s.min, s.max, s.last, s.last_ms) == (100, 25, -50.0, 89.0, -21.0, 1029)
    assert metrics.append_points(job, "loss", [(5000, math.nan)]) == 0


@pytest.mark.django_db
def test_display_keeps_each_buckets_min_and_max(job):
    rng = random.Random(2)
    n = 100_000
    values = [rng.gauss(0, 1) for _ in range(n)]
    spikes = {12_345: 1e6, 77_777: -1e6, 99_999: 5e5}
    for step, v in spikes.items():
        values[step - 1] = v
    metrics.append_points(job, "loss", [(1_700_000_000_000 + i * 10, v) for i, v in enumerate(values)])
    shown = metrics.display_series(job, max_points=1000)["metrics"]["loss"]
    pts = shown["points"]
    assert shown["downsampled"] and shown["count"] == n
    assert len(pts) <= 1000
    assert [p[0] for p in pts] == sorted({p[0] for p in pts})
    by_step = {p[0]: p[2] for p in pts}
    for step, v in spikes.items():
        assert by_step[step] == v
    assert pts[0][0] == 1 and pts[-1][0] == n
    # Every bucket's min and max are there: compare against a brute-force downsample.
    width = -(-n // 250)
    width = -(-width // metrics.SUMMARY_BUCKET) * metrics.SUMMARY_BUCKET
    for b in range(0, n, width):
        chunk = values[b : b + width]
        got = [p[2] for p in pts if b < p[0] <= b + width]
        assert min(got) == min(chunk) and max(got) == max(chunk)


@pytest.mark.django_db
def test_display_short_series_whole_and_since(job):
    metrics.append_points(job, "acc", [(1000 + i, i / 10) for i in range(50)])
    shown = metrics.display_series(job)["metrics"]["acc"]
    assert shown["points"] == [[i + 1, 1000 + i, i / 10] for i in range(50)]
    assert not shown["downsampled"]
    assert metrics.display_series(job, since_step=47)["metrics"]["acc"]["points"] == [
        [48, 1047, 4.7],
        [49, 1048, 4.8],
        [50, 1049, 4.9],
    ]
    assert metrics.display_series(job, since_step=50)["metrics"]["acc"]["points"] == []


@pytest.mark.django_db
def test_display_since_inside_a_long_series_is_exact(job):
    rng = random.Random(3)
    values = [rng.random() for _ in range(30_000)]
    metrics.append_points(job, "m", [(i, v) for i, v in enumerate(values)])
    since = 5000  # inside a chunk and inside a summary bucket
    pts = metrics.display_series(job, max_points=400, since_step=since)["metrics"]["m"]["points"]
    assert pts[0][0] == since + 1 and pts[-1][0] == 30_000
    assert min(p[2] for p in pts) == min(values[since:])
    assert max(p[2] for p in pts) == max(values[since:])


@pytest.mark.django_db
def test_three_long_series_answer_fast_and_small(job):
    for name in ("loss", "acc", "lr"):
        metrics.append_points(
            job, name, [(1_700_000_000_000 + i * 1000, math.sin(i / 100)) for i in range(100_000)]
        )
    assert MetricChunk.objects.filter(series__job=job).count() == 3 * 25
    metrics.display_series(job)  # warm
    started = time.perf_counter()
    shown = metrics.display_series(job)
    took = time.perf_counter() - started
    size = len(json.dumps(shown, separators=(",", ":")))
    assert size < 250_000, size
    assert took < 0.5, took  # the bench measures the real figure; this only catches a regression


@pytest.mark.django_db
def test_summaries_in_one_query(job, alice, django_assert_num_queries):
    other = TrainingJob.objects.create(owner=alice, name="metrics-other", entry_point="train.py")
    metrics.append_points(job, "loss", [(1, 3.0), (2, 1.0), (3, 2.0)])
    metrics.append_points(other, "acc", [(1, 0.5)])
    with django_assert_num_queries(1):
        got = metrics.summaries([job.pk, other.pk, 999_999])
    assert got == {
        job.pk: {"loss": {"last": 2.0, "min": 1.0, "max": 3.0, "count": 3}},
        other.pk: {"acc": {"last": 0.5, "min": 0.5, "max": 0.5, "count": 1}},
    }


def test_a_match_paused_by_a_busy_machine_is_tried_again_not_counted_as_slow():
    # The regex module's timeout is wall-clock: a simple pattern descheduled past it (a loaded
    # machine) must not lose the point, nor count toward the metric being dropped.
    import time as clock

    import regex as re_module

    real = re_module.compile(r"loss=(\S+)")

    class Paused:
        groups = 1
        timeouts: list[float] = []

        def search(self, line, timeout):
            self.timeouts.append(timeout)
            if len(self.timeouts) % 2 == 1:  # every first try: asleep past the bound, no CPU
                clock.sleep(timeout * 1.5)
                raise TimeoutError("regex timed out")
            return real.search(line, timeout=timeout)

    matcher = metrics.Matcher([{"name": "loss", "regex": r"loss=(\S+)"}])
    matcher.defs[0].compiled = Paused()
    for step in range(metrics.MAX_TIMEOUTS + 1):
        assert [c.value for c in matcher.match(f"loss={step}e-3")] == [step * 1e-3]
    assert matcher.defs[0].timeouts == 0 and not matcher.problems
    assert Paused.timeouts[:2] == [metrics.MATCH_SECONDS, metrics.MATCH_SECONDS * 10]
