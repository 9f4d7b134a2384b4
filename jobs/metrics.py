"""Training metrics: picked out of log lines by ``MetricDefinitions``, stored as time series,
read back downsampled for charts.

Two halves:

- **Parsing and matching** (no Django: a local job's process imports this before Django is set
  up): ``parse_value``, ``check_definitions`` (what the new-job form says of each row),
  ``Matcher`` (every line against every definition, each match bounded in time) and
  ``test_lines`` (the form's tester).
- **Storage** (Django imported inside the functions): ``append_points`` into
  ``MetricSeries``/``MetricChunk``, ``display_series`` (a job's charts), ``summaries`` (the
  history's columns).

How a value is read. As on SageMaker, each definition's regex is *searched* in each line and
its first capture group (the whole match when it has none) is the value. The captured text is
a number when it reads as ``[+-]digits[.digits][e[+-]digits]`` (``7e-05``, ``-1.5E+3``, ``.5``,
``3.``), surrounding blanks allowed; anything else (``nan``, ``inf``, ``1,5``, ``0x10``, a word)
is not recorded, and the tester says why. ``nan`` and ``inf`` are refused on purpose: a chart,
a minimum and a sort cannot use them, and CloudWatch does not accept them either. A number too
large for a double (``1e999``) is refused the same way.

AWS's dialect. SageMaker does not document which regular-expression engine reads
MetricDefinitions; AWS's services, like the patterns of their service models
(``jobs.java_patterns``), use Java's ``java.util.regex``. ``check_definitions`` therefore flags
what Python accepts and Java reads differently or refuses: ``(?P<name>…)``/``(?P=name)``
(Java writes ``(?<name>…)``/``\\k<name>``; Python's ``re`` refuses those, so a portable regex uses
unnamed groups), ``(?#…)`` comments, conditionals ``(?(1)…)``, ``{,n}`` (Java needs the lower
bound), the ``a``/``L`` inline flags, ``\\U``/``\\N{…}`` escapes and ``\\Z`` (Java's allows a final
line terminator). Possessive quantifiers and atomic groups are the same in both since Python
3.11. The tester also runs each regex as Java would (ASCII ``\\d``/``\\w``/``\\s``,
``jobs.java_patterns``) and says when that captures something else. SageMaker's own number
parser has been seen to drop exponents (``7e-05`` read as 7); anyjob keeps them and the tester
warns where AWS may differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import regex

#: SageMaker's limits on ``AlgorithmSpecification.MetricDefinitions`` (its service model).
MAX_DEFINITIONS = 40
MAX_NAME = 255
MAX_REGEX = 500
#: Points kept per metric of a job; later ones only move ``MetricSeries.dropped`` and ``last``.
MAX_POINTS = 100_000
#: One regex searched in one line gives up after this long (the line then counts as a miss).
MATCH_SECONDS = 0.05
#: A definition that timed out this many times is not matched any more (for that job or test).
MAX_TIMEOUTS = 3
#: Lines longer than this are matched on their first ``MAX_LINE`` characters only.
MAX_LINE = 16 * 1024

#: The tester reads at most this many lines, this many bytes, for this long.
TEST_MAX_LINES = 2000
TEST_MAX_BYTES = 256 * 1024
TEST_SECONDS = 2.0
#: Captures listed per definition in the tester (all are counted).
TEST_MAX_CAPTURES = 200

#: Points per ``MetricChunk``, and steps per summary bucket (a chunk's summary keeps each
#: bucket's first, minimum, maximum and last point). Chunks start at step 1, 4097, …
CHUNK_POINTS = 4096
SUMMARY_BUCKET = 64
#: What ``display_series`` returns per metric by default (4 points per display bucket at most).
DISPLAY_POINTS = 1000
#: ``display_series``'s bounds on ``max_points``.
MIN_DISPLAY_POINTS = 8
MAX_DISPLAY_POINTS = 10_000

_POINT = struct.Struct("<qd")
_TRIPLE = struct.Struct("<qqd")
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")
_EXPONENT_NEXT = re.compile(r"[eE][-+]?\d")
_SAMPLES = ("0", "1", "7", "42", "0.5", "-3", "1.5", "100.25", "2e-05", "1.5e-05", "1e3")


# ---------------------------------------------------------------- parsing


def parse_value(text: str) -> float | None:
    """The number ``text`` holds (exponent and sign kept), or ``None`` when it is not a finite
    number: ``nan``, ``inf`` and values too large for a double are refused (see the module)."""
    if len(text) > 400:
        return None
    m = _NUMBER.fullmatch(text)
    if m is None:
        return None
    value = float(m.group(1))
    return value if math.isfinite(value) else None


def value_problem(text: str) -> str | None:
    """Why ``text`` is not recorded as a value, in words (``None`` when it is)."""
    if parse_value(text) is not None:
        return None
    word = text.strip().lower().lstrip("+-")
    if word in ("nan", "inf", "infinity"):
        return f"{text.strip()!r} is refused: anyjob records finite numbers only (as CloudWatch does)"
    if _NUMBER.fullmatch(text):
        return f"{_short(text)!r} is too large for a number (a double)"
    return f"{_short(text)!r} is not a number"


def _short(text: str, n: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "…"


# ---------------------------------------------------------------- checking definitions


@dataclasses.dataclass(frozen=True)
class Problem:
    """What is wrong with one definition (``index``, 0-based; ``None``: the list as a whole).
    ``field`` is ``"name"``, ``"regex"`` or ``None``; an ``"error"`` refuses the definitions,
    a ``"warning"`` (e.g. AWS's dialect, slow on long lines) only tells."""

    index: int | None
    field: str | None
    message: str
    level: str = "error"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fields(d: Mapping[str, Any]) -> tuple[str, str]:
    """A definition's name and regex, in the form's (``name``/``regex``) or the API's
    (``Name``/``Regex``) spelling."""
    name = d.get("name", d.get("Name", ""))
    pattern = d.get("regex", d.get("Regex", ""))
    return (name if isinstance(name, str) else ""), (pattern if isinstance(pattern, str) else "")


def check_definitions(defs: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Every problem of these definitions, row by row, in words a user can act on."""
    problems: list[Problem] = []
    if len(defs) > MAX_DEFINITIONS:
        problems.append(
            Problem(
                None,
                None,
                f"At most {MAX_DEFINITIONS} metric definitions (SageMaker's limit); {len(defs)} given.",
            )
        )
    seen: dict[str, int] = {}
    budget = [0.25]  # seconds of slow-line probing left, shared by every row
    for i, d in enumerate(defs):
        name, pattern = _fields(d)
        problems += _name_problems(i, name, seen)
        problems += regex_problems(pattern, index=i, probe_budget=budget)
    return problems


def _name_problems(i: int, name: str, seen: dict[str, int]) -> list[Problem]:
    if not name.strip():
        return [Problem(i, "name", "A metric needs a name.")]
    out = []
    if len(name) > MAX_NAME:
        out.append(Problem(i, "name", f"A metric name is at most {MAX_NAME} characters ({len(name)} given)."))
    if any(c in name for c in "\r\n"):
        out.append(Problem(i, "name", "A metric name is one line."))
    key = name.strip().casefold()
    if key in seen:
        out.append(
            Problem(
                i,
                "name",
                f"{_short(name)!r} is already the name of row {seen[key] + 1} (names differ only in case).",
            )
        )
    else:
        seen[key] = i
    return out


def regex_problems(pattern: str, *, index: int = 0, probe_budget: list[float] | None = None) -> list[Problem]:
    """The problems of one definition's regex: too long, not Python, not Java (AWS), no group,
    nothing numeric to capture, no exponent, slow on long lines."""
    if not pattern:
        return [Problem(index, "regex", "A metric needs a regular expression.")]
    if len(pattern) > MAX_REGEX:
        return [
            Problem(
                index, "regex", f"A metric's regex is at most {MAX_REGEX} characters ({len(pattern)} given)."
            )
        ]
    if any(c in pattern for c in "\r\n"):
        return [Problem(index, "regex", "A metric's regex is one line (SageMaker refuses line breaks).")]
    try:
        re.compile(pattern)
        compiled = compile_pattern(pattern)
    except (re.error, regex.error, OverflowError, RecursionError) as exc:
        return [Problem(index, "regex", f"Does not compile in Python: {_regex_error(exc)}.")]
    out = [Problem(index, "regex", m, "warning") for m in aws_dialect_problems(pattern)]
    if compiled.groups == 0:
        out.append(
            Problem(
                index,
                "regex",
                "Has no capture group: put the number in parentheses, e.g. loss=([-+0-9.eE]+).",
            )
        )
    else:
        out += _group_problems(index, pattern)
    if probe_budget is not None and probe_budget[0] > 0:
        started = time.monotonic()
        if _slow_on_long_lines(compiled):
            out.append(
                Problem(
                    index,
                    "regex",
                    f"Very slow on long lines (a match took over {MATCH_SECONDS:g} s): such lines are "
                    f"skipped, and after {MAX_TIMEOUTS} of them the metric is no longer read. Avoid nested "
                    "repetition such as (a+)+.",
                    "warning",
                )
            )
        probe_budget[0] -= time.monotonic() - started
    return out


def _regex_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The definition's regex as anyjob matches it: Python's syntax (the ``regex`` package,
    compatible with ``re``, for its per-match ``timeout``)."""
    return regex.compile(pattern, regex.VERSION0)


@functools.lru_cache(maxsize=512)
def _java_pattern(pattern: str) -> Any | None:
    """The regex matched as Java would, or ``None`` when it cannot be (``jobs.java_patterns``)."""
    from jobs.java_patterns import java_to_regex

    try:
        return regex.compile(java_to_regex(pattern), regex.VERSION1)
    except (regex.error, OverflowError, RecursionError):
        return None


def _pieces(pattern: str) -> Iterable[tuple[int, str, bool]]:
    """``(offset, piece, in_class)`` for each escape (``\\x``) or character of the pattern,
    ``in_class`` when inside ``[…]``."""
    i, depth = 0, 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            yield i, pattern[i : i + 2], depth > 0
            i += 2
            continue
        if c == "[" and depth == 0:
            yield i, c, False
            depth = 1
            i += 1
            # a ']' right after '[' or '[^' is a literal
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1
            continue
        if c == "]" and depth:
            depth = 0
            yield i, c, True
            i += 1
            continue
        yield i, c, depth > 0
        i += 1


def aws_dialect_problems(pattern: str) -> list[str]:
    """What in ``pattern`` (valid Python) Java's ``java.util.regex`` (AWS's, see the module)
    refuses or reads differently, one sentence each."""
    out: list[str] = []

    def say(text: str) -> None:
        if text not in out:
            out.append(text)

    for at, piece, in_class in _pieces(pattern):
        if in_class:
            continue
        rest = pattern[at:]
        if piece == "(":
            if rest.startswith("(?P<"):
                say("(?P<name>…) is Python's: AWS (Java) refuses it; use an unnamed group (…).")
            elif rest.startswith("(?P="):
                say("(?P=name) is Python's: AWS (Java) refuses it.")
            elif rest.startswith("(?#"):
                say("(?#…) comments are Python's: AWS (Java) refuses them.")
            elif rest.startswith("(?("):
                say("Conditional groups (?(…)…) are Python's: AWS (Java) refuses them.")
            elif (m := re.match(r"\(\?([a-zA-Z]+)[:)]", rest)) and set(m.group(1)) & set("aL"):
                say("The inline flags a and L are Python's: AWS (Java) refuses them.")
        elif piece == "{" and re.match(r"\{,\d+\}", rest):
            say("{,n} is Python's (zero to n): AWS (Java) needs the lower bound, {0,n}.")
        elif piece == "\\Z":
            say("\\Z ends the text in Python; in AWS's Java it also matches before a final line break.")
        elif piece == "\\U":
            say("\\U… escapes are Python's: AWS (Java) writes \\x{…}.")
        elif piece == "\\N":
            say("\\N{…} is read differently by AWS (Java): write the character itself.")
    return out


def _first_group(pattern: str) -> str | None:
    """The text of the pattern's first capturing group, or ``None``."""
    start = None
    depth = 0
    for at, piece, in_class in _pieces(pattern):
        if in_class:
            continue
        if piece == "(":
            rest = pattern[at:]
            capturing = not rest.startswith("(?") or (
                rest.startswith(("(?P<", "(?<")) and not rest.startswith(("(?<=", "(?<!"))
            )
            if start is None:
                if capturing:
                    start, depth = at, 1
            else:
                depth += 1
        elif piece == ")" and start is not None:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : at]
                return re.sub(r"^\?P?<\w+>", "", inner)
    return None


def _group_problems(index: int, pattern: str) -> list[Problem]:
    inner = _first_group(pattern)
    if inner is None:
        return []
    try:
        group = regex.compile(f"(?:{inner})", regex.VERSION0)
    except (regex.error, OverflowError, RecursionError):
        return []  # e.g. a back reference: the group cannot be tried alone
    try:
        fits = [s for s in _SAMPLES if group.fullmatch(s, timeout=MATCH_SECONDS)]
    except TimeoutError:
        return []
    if not fits:
        return [
            Problem(
                index,
                "regex",
                "Its first group cannot capture a number (it matches none of 1, 0.5, -3, 1.5e-05): "
                "the value is what the first (…) captures.",
            )
        ]
    if not any("e" in s for s in fits):
        return [
            Problem(
                index,
                "regex",
                "Its first group cannot capture an exponent: 7e-05 would be read as 7. "
                "Use e.g. ([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?).",
                "warning",
            )
        ]
    return []


_PROBES = ("a" * 3000 + "!", "0" * 3000 + "x", " " * 3000 + "!", "loss=" + "1." * 1500 + "x")


def _slow_on_long_lines(compiled: Any) -> bool:
    for probe in _PROBES:
        try:
            compiled.search(probe, timeout=MATCH_SECONDS)
        except TimeoutError:
            return True
    return False


# ---------------------------------------------------------------- matching


@dataclasses.dataclass
class Capture:
    """One definition's capture in one line: ``value`` is ``None`` when ``warning`` says why it
    is not recorded; a recorded value may still carry a warning (AWS may read it otherwise)."""

    name: str
    text: str
    value: float | None
    warning: str | None = None


@dataclasses.dataclass
class _Definition:
    name: str
    pattern: str
    compiled: Any
    timeouts: int = 0
    disabled: bool = False


def _search(compiled: Any, line: str, seconds: float) -> Any:
    """``compiled.search(line)`` bounded by ``seconds`` of this thread's CPU. The ``regex``
    module's timeout is wall-clock: on a busy machine a simple pattern may be descheduled past
    it. A timeout that used under half its CPU is such a pause: tried once more with ten times
    the bound (a pattern that really is slow spends its CPU, and times out at once)."""
    started = time.thread_time()
    try:
        return compiled.search(line, timeout=seconds)
    except TimeoutError:
        if time.thread_time() - started >= seconds / 2:
            raise
    return compiled.search(line, timeout=seconds * 10)


class Matcher:
    """Every line against every usable definition, as SageMaker reads a job's log: the first
    match in the line, its first group. Each search is bounded by ``MATCH_SECONDS``; a
    definition that timed out ``MAX_TIMEOUTS`` times is dropped and said so in ``problems``.

    Definitions that do not compile (or have an empty name) are skipped, and said so too."""

    def __init__(self, defs: Iterable[Mapping[str, Any]], *, match_seconds: float = MATCH_SECONDS) -> None:
        self.match_seconds = match_seconds
        self.defs: list[_Definition] = []
        self.problems: list[str] = []
        for d in defs:
            name, pattern = _fields(d)
            if not name or not pattern or len(pattern) > MAX_REGEX:
                self.problems.append(f"metric {_short(name)!r}: not a usable definition; ignored")
                continue
            try:
                self.defs.append(_Definition(name, pattern, compile_pattern(pattern)))
            except (regex.error, OverflowError, RecursionError) as exc:
                self.problems.append(
                    f"metric {_short(name)!r}: regex does not compile ({_regex_error(exc)}); ignored"
                )

    @property
    def active(self) -> bool:
        return any(not d.disabled for d in self.defs)

    def match(self, line: str, *, explain: bool = False) -> list[Capture]:
        """The captures of ``line`` (cut at ``MAX_LINE``). ``explain`` adds the tester's
        warnings (exponent or sign left out of the capture, AWS may differ)."""
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        out: list[Capture] = []
        for d in self.defs:
            if d.disabled:
                continue
            try:
                m = _search(d.compiled, line, self.match_seconds)
            except TimeoutError:
                d.timeouts += 1
                if d.timeouts >= MAX_TIMEOUTS:
                    d.disabled = True
                    self.problems.append(
                        f"metric {_short(d.name)!r}: matching timed out on {d.timeouts} lines "
                        f"(over {self.match_seconds:g} s each); no longer read"
                    )
                if explain:
                    out.append(Capture(d.name, "", None, f"match timed out (over {self.match_seconds:g} s)"))
                continue
            if m is None:
                continue
            g = 1 if m.re.groups else 0
            text = m.group(g)
            if text is None:
                if explain:
                    out.append(Capture(d.name, "", None, "the group captured nothing"))
                continue
            value = parse_value(text)
            warning = value_problem(text) if value is None else None
            if explain and value is not None:
                warning = _explain(d, line, m, g, text)
            out.append(Capture(d.name, text, value, warning))
        return out


def _explain(d: _Definition, line: str, m: Any, g: int, text: str) -> str | None:
    end, start = m.end(g), m.start(g)
    if _EXPONENT_NEXT.match(line, end):
        tail = _EXPONENT_NEXT.match(line, end)
        assert tail is not None
        more = re.match(r"[eE][-+]?\d+", line[end:])
        full = text + (more.group(0) if more else tail.group(0))
        return (
            f"the capture stops before the exponent: the line says {full}, {text} is recorded "
            "(here and on AWS); widen the group, e.g. ([-+0-9.eE]+)"
        )
    if start > 0 and line[start - 1] in "+-" and text[:1] not in "+-":
        return f"the capture leaves out the sign: the line says {line[start - 1]}{text}, {text} is recorded"
    if "e" in text.lower():
        return (
            f"has an exponent: anyjob records {parse_value(text):g}; SageMaker's own parser has been "
            "reported to drop exponents (reading 7e-05 as 7)"
        )
    java = _java_pattern(d.pattern)
    if java is not None:
        try:
            jm = java.search(line, timeout=MATCH_SECONDS)
        except TimeoutError:
            return None
        jtext = None if jm is None else jm.group(g) if g <= jm.re.groups else None
        if jtext != text:
            return f"AWS (Java's regex) would capture {jtext!r} here, not {text!r}"
    return None


def test_lines(defs: Sequence[Mapping[str, Any]], lines: str | Iterable[str]) -> list[dict[str, Any]]:
    """What the tester shows: per definition (in order), its problems and its captures in
    ``lines`` (text or lines; at most ``TEST_MAX_LINES`` lines, ``TEST_MAX_BYTES`` bytes,
    ``TEST_SECONDS`` in all, each match ``MATCH_SECONDS``)::

        {"index", "name", "regex", "problems": [{"field", "message", "level"}],
         "captures": [{"line": 1-based, "text", "value": float | None, "warning": str | None}],
         "count": captures in all, "numbers": recorded values in all, "shown": len(captures),
         "lines": lines read, "cut": why reading stopped early ("" if it did not)}
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    problems = check_definitions(defs)
    rows: list[dict[str, Any]] = []
    for i, d in enumerate(defs[:MAX_DEFINITIONS]):
        name, pattern = _fields(d)
        rows.append(
            {
                "index": i,
                "name": name,
                "regex": pattern,
                "problems": [
                    {"field": p.field, "message": p.message, "level": p.level}
                    for p in problems
                    if p.index == i
                ],
                "captures": [],
                "count": 0,
                "numbers": 0,
                "shown": 0,
                "lines": 0,
                "cut": "",
            }
        )
    usable = [
        (row, Matcher([{"name": row["name"] or "?", "regex": row["regex"]}]))
        for row in rows
        if not any(p["level"] == "error" and p["field"] == "regex" for p in row["problems"])
    ]
    started = time.monotonic()
    read = size = 0
    cut = ""
    for number, line in enumerate(lines, 1):
        if number > TEST_MAX_LINES:
            cut = f"only the first {TEST_MAX_LINES:,} lines are tested"
            break
        size += len(line.encode("utf-8", "replace")) + 1
        if size > TEST_MAX_BYTES:
            cut = f"only the first {TEST_MAX_BYTES // 1024} KiB are tested"
            break
        if time.monotonic() - started > TEST_SECONDS:
            cut = f"testing stopped after {TEST_SECONDS:g} s"
            break
        read = number
        for row, matcher in usable:
            for c in matcher.match(line, explain=True):
                row["count"] += 1
                row["numbers"] += c.value is not None
                if len(row["captures"]) < TEST_MAX_CAPTURES:
                    row["captures"].append(
                        {"line": number, "text": _short(c.text, 200), "value": c.value, "warning": c.warning}
                    )
    for row, matcher in usable:
        for message in matcher.problems:
            row["problems"].append({"field": "regex", "message": message, "level": "warning"})
    for row in rows:
        row["shown"] = len(row["captures"])
        row["lines"] = read
        row["cut"] = cut
    return rows


# ---------------------------------------------------------------- storage


def pack_points(points: Sequence[tuple[int, float]]) -> bytes:
    return b"".join(_POINT.pack(ms, v) for ms, v in points)


def unpack_points(data: bytes | memoryview) -> list[tuple[int, float]]:
    return list(_POINT.iter_unpack(bytes(data)))


def flat_points(data: bytes | memoryview) -> tuple[int, tuple[Any, ...]]:
    """A chunk's points as one flat tuple ``(ms, value, ms, value, …)`` and how many: one
    ``struct`` call, no tuple per point (``jobs.compare`` thins 20 series of 100,000 this way)."""
    data = bytes(data)
    n = len(data) // _POINT.size
    return n, struct.unpack(f"<{'qd' * n}", data[: n * _POINT.size])


def flat_summary(data: bytes | memoryview) -> tuple[int, tuple[Any, ...]]:
    """A chunk's summary as ``(step, ms, value, step, ms, value, …)`` and how many triples."""
    data = bytes(data)
    n = len(data) // _TRIPLE.size
    return n, struct.unpack(f"<{'qqd' * n}", data[: n * _TRIPLE.size])


def summary_extremes(data: bytes | memoryview) -> list[list[Any]]:
    """A chunk's first, minimum, maximum and last point (``[step, ms, value]``) from its summary:
    the values unpacked alone (a third of the objects), the steps and times of the four only."""
    data = bytes(data)
    n = len(data) // _TRIPLE.size
    if n == 0:
        return []
    values = struct.unpack(f"<{'16xd' * n}", data[: n * _TRIPLE.size])
    picks = sorted({0, values.index(min(values)), values.index(max(values)), n - 1})
    return [list(_TRIPLE.unpack_from(data, k * _TRIPLE.size)) for k in picks]


def _summary(first_step: int, points: Sequence[tuple[int, float]]) -> list[tuple[int, int, float]]:
    """Each ``SUMMARY_BUCKET`` of ``points`` (step-aligned from step 1) as its first, minimum,
    maximum and last point, in step order, each once."""
    out: list[tuple[int, int, float]] = []
    offset = (first_step - 1) % SUMMARY_BUCKET
    i = 0
    n = len(points)
    while i < n:
        j = min(n, i + SUMMARY_BUCKET - offset)
        offset = 0
        out += _bucket(first_step, points, i, j)
        i = j
    return out


def _bucket(
    first_step: int, points: Sequence[tuple[int, float]], i: int, j: int
) -> list[tuple[int, int, float]]:
    lo = hi = i
    lo_v = hi_v = points[i][1]
    for k in range(i + 1, j):
        v = points[k][1]
        if v < lo_v:
            lo, lo_v = k, v
        elif v > hi_v:
            hi, hi_v = k, v
    return [(first_step + k, *points[k]) for k in sorted({i, lo, hi, j - 1})]


def _pack_summary(triples: Sequence[tuple[int, int, float]]) -> bytes:
    return b"".join(_TRIPLE.pack(*t) for t in triples)


def _job_id(job: Any) -> int:
    return job if isinstance(job, int) else job.pk


def append_points(job: Any, name: str, points: Sequence[tuple[int, float]], *, dropped: int = 0) -> int:
    """Add ``points`` (``(unix_ms, value)``, in order) to the job's metric ``name``; returns how
    many were kept. Past ``MAX_POINTS`` a point only moves ``dropped`` and ``last``/``last_ms``;
    ``dropped`` counts points seen after these but not passed on (a backend's own cut).
    Non-finite values are skipped. One transaction: the series row locked, the last chunk
    rewritten, new chunks inserted in one statement."""
    from django.db import transaction

    from jobs.models import MetricChunk, MetricSeries

    points = [(int(ms), float(v)) for ms, v in points if math.isfinite(v)]
    if not points and not dropped:
        return 0
    with transaction.atomic():
        series, _ = MetricSeries.objects.select_for_update().get_or_create(
            job_id=_job_id(job), name=name[:MAX_NAME]
        )
        room = max(0, MAX_POINTS - series.count)
        kept, extra = points[:room], points[room:]
        if points:
            series.last_ms, series.last = points[-1]
            if series.first_ms is None:
                series.first_ms = points[0][0]
        series.dropped += len(extra) + dropped
        if kept:
            values = [v for _, v in kept]
            low, high = min(values), max(values)
            series.min = low if series.min is None else min(series.min, low)
            series.max = high if series.max is None else max(series.max, high)
            _store_chunks(MetricChunk, series, kept)
            series.count += len(kept)
        series.save()
    return len(kept)


def _store_chunks(chunk_model: Any, series: Any, kept: list[tuple[int, float]]) -> None:
    step = series.count + 1  # the step of kept[0]
    i = 0
    if series.count % CHUNK_POINTS:
        seq = series.count // CHUNK_POINTS
        chunk = chunk_model.objects.get(series=series, seq=seq)
        old = unpack_points(chunk.points)
        take = CHUNK_POINTS - len(old)
        merged = old + kept[:take]
        chunk.points = pack_points(merged)
        chunk.count = len(merged)
        chunk.summary = _pack_summary(_summary(chunk.first_step, merged))
        chunk.save(update_fields=["points", "count", "summary"])
        i = take
        step += take
    new = []
    while i < len(kept):
        part = kept[i : i + CHUNK_POINTS]
        new.append(
            chunk_model(
                series=series,
                seq=(step - 1) // CHUNK_POINTS,
                first_step=step,
                count=len(part),
                points=pack_points(part),
                summary=_pack_summary(_summary(step, part)),
            )
        )
        i += len(part)
        step += len(part)
    if new:
        chunk_model.objects.bulk_create(new)


def _downsample(triples: Sequence[tuple[int, int, float]], width: int) -> list[list[Any]]:
    """``[step, unix_ms, value]`` lists: of each run of ``width`` steps (aligned from step 1)
    the first, minimum, maximum and last of ``triples`` (in step order), in step order."""
    out: list[list[Any]] = []
    i, n = 0, len(triples)
    while i < n:
        last_step = ((triples[i][0] - 1) // width + 1) * width
        j = lo = hi = i
        lo_v = hi_v = triples[i][2]
        while j + 1 < n and triples[j + 1][0] <= last_step:
            j += 1
            v = triples[j][2]
            if v < lo_v:
                lo, lo_v = j, v
            elif v > hi_v:
                hi, hi_v = j, v
        out += [list(triples[k]) for k in sorted({i, lo, hi, j})]
        i = j + 1
    return out


def display_series(
    job: Any,
    max_points: int = DISPLAY_POINTS,
    since_step: int | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """A job's metrics for charts: ``{"metrics": {name: {"points": [[step, unix_ms, value], …],
    "count", "dropped", "last", "min", "max", "first_ms", "last_ms", "downsampled"}}}``.

    At most ``max_points`` points per metric: past that, the steps (after ``since_step``, when
    given) are cut into ``max_points // 4`` buckets and each bucket keeps its first, minimum,
    maximum and last point, so no spike is lost. A long series is read from its chunks'
    summaries (exact: display buckets are whole summary buckets), not its points."""
    from django.db.models import Q

    from jobs.models import MetricChunk, MetricSeries

    max_points = max(MIN_DISPLAY_POINTS, min(int(max_points), MAX_DISPLAY_POINTS))
    since = max(0, int(since_step or 0))
    qs = MetricSeries.objects.filter(job_id=_job_id(job)).order_by("name")
    if names is not None:
        qs = qs.filter(name__in=list(names))
    series = list(qs)
    plans: dict[int, tuple[int, int, int, bool]] = {}  # series id → (first, last step, width, summaries)
    raw_q, summary_q = Q(), Q()
    raw_any = summary_any = False
    for s in series:
        lo, hi = since + 1, s.count
        n = hi - lo + 1
        if n <= 0:
            continue
        width = 1
        if n > max_points:
            width = -(-n // (max_points // 4))
        use_summary = width >= SUMMARY_BUCKET
        if use_summary:
            width = -(-width // SUMMARY_BUCKET) * SUMMARY_BUCKET
        plans[s.pk] = (lo, hi, width, use_summary)
        first_seq, last_seq = (lo - 1) // CHUNK_POINTS, (hi - 1) // CHUNK_POINTS
        if use_summary:
            # Whole chunks by their summaries; a chunk the range starts inside, by its points.
            head = first_seq if (lo - 1) % CHUNK_POINTS else None
            if head is not None:
                raw_q |= Q(series_id=s.pk, seq=head)
                raw_any = True
                first_seq += 1
            if first_seq <= last_seq:
                summary_q |= Q(series_id=s.pk, seq__gte=first_seq, seq__lte=last_seq)
                summary_any = True
        else:
            raw_q |= Q(series_id=s.pk, seq__gte=first_seq, seq__lte=last_seq)
            raw_any = True
    # Per series, (first step, its triples) of each chunk read: sorted by chunk, then joined.
    parts: dict[int, list[tuple[int, list[tuple[int, int, float]]]]] = {pk: [] for pk in plans}
    if raw_any:
        rows = MetricChunk.objects.filter(raw_q).values_list("series_id", "first_step", "points")
        for sid, first, data in rows:
            lo, hi, _, use_summary = plans[sid]
            pts = unpack_points(data)
            start, stop = max(0, lo - first), max(0, min(len(pts), hi - first + 1))
            pts = pts[start:stop]
            if use_summary:
                ts = _summary(first + start, pts)
            else:
                ts = [(first + start + k, ms, v) for k, (ms, v) in enumerate(pts)]
            parts[sid].append((first + start, ts))
    if summary_any:
        # Whole chunks inside the range (the one it starts inside was read by its points).
        rows = MetricChunk.objects.filter(summary_q).values_list("series_id", "first_step", "summary")
        for sid, first, data in rows:
            parts[sid].append((first, list(_TRIPLE.iter_unpack(bytes(data)))))
    out: dict[str, Any] = {}
    for s in series:
        plan = plans.get(s.pk)
        points: list[list[Any]] = []
        if plan is not None:
            ordered = [t for _, ts in sorted(parts[s.pk], key=lambda part: part[0]) for t in ts]
            width = plan[2]
            points = [list(t) for t in ordered] if width == 1 else _downsample(ordered, width)
        out[s.name] = {
            "points": points,
            "count": s.count,
            "dropped": s.dropped,
            "last": s.last,
            "min": s.min,
            "max": s.max,
            "first_ms": s.first_ms,
            "last_ms": s.last_ms,
            "downsampled": plan is not None and plan[2] > 1,
        }
    return {"metrics": out}


def summaries(job_ids: Iterable[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """``{job_id: {name: {"last", "min", "max", "count"}}}`` for these jobs, in one query (jobs
    without metrics are left out)."""
    from jobs.models import MetricSeries

    ids = list(job_ids)
    out: dict[int, dict[str, dict[str, Any]]] = {}
    if not ids:
        return out
    rows = MetricSeries.objects.filter(job_id__in=ids).values_list(
        "job_id", "name", "last", "min", "max", "count"
    )
    for job_id, name, last, low, high, count in rows:
        out.setdefault(job_id, {})[name] = {"last": last, "min": low, "max": high, "count": count}
    return out


test_lines.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported by name
