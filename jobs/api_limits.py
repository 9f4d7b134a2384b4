"""What a SageMaker API request may contain, checked the way AWS checks it.

AWS validates every request against its service model and answers HTTP 400
``ValidationException``: "1 validation error detected: Value 'bad name' at 'trainingJobName'
failed to satisfy constraint: Member must satisfy regular expression pattern: ...". boto3 checks
only part of that before sending (types, required members, unknown members, minimums), so a
request boto3 accepts can still be refused by AWS for a pattern, a maximum, an enum value or a
list that is too long. This module is the one place that knows all of it:

- The rules come from botocore's copy of the service model (``sagemaker``, and
  ``sagemaker-runtime`` for InvokeEndpoint), so they follow AWS whenever boto3 is upgraded.
  They are compiled on first use, one shape at a time, and cached for the process.
- The few rules the service enforces without declaring them (contract §3) are added by hand in
  ``_SERVICE_BOUNDS`` and ``_UNIQUE_MEMBERS``, each only where the model lacks it.
- The model's patterns are Java regular expressions, unanchored but meant to match the whole
  value: they run through ``jobs.java_patterns`` with a full match.

``validate()`` lists every problem, for forms (``Problem.path`` and ``Problem.message``).
``check()`` raises what a boto3 caller of the real service would get, for the local backend.
No Django here: the dashboard's forms and the workers import this alike.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import botocore.loaders
import botocore.model
from botocore.exceptions import ClientError, ParamValidationError
from botocore.utils import parse_to_aware_datetime
from botocore.validate import ParamValidator

from jobs.java_patterns import compile_java_pattern

logger = logging.getLogger(__name__)

Origin = Literal["sdk", "model", "service"]

MAX_RUNTIME_IN_SECONDS = 2_419_200  # 28 days: StoppingCondition.MaxRuntimeInSeconds
DEFAULT_MAX_RUNTIME_IN_SECONDS = 86_400  # what AWS applies when no StoppingCondition is given
SHOWN_CHARS = 100  # how much of a value a message quotes before cutting it with '…'

# Rules AWS enforces that its published model does not declare (contract §3), as
# (structure, member) -> (minimum, maximum). Each bound applies only where the model has none
# as strict, so a botocore that starts declaring it takes over without reporting it twice.
_SERVICE_BOUNDS: dict[tuple[str, str], tuple[int | None, int | None]] = {
    ("StoppingCondition", "MaxRuntimeInSeconds"): (1, MAX_RUNTIME_IN_SECONDS),
    ("ResourceConfig", "InstanceCount"): (1, None),
    ("ResourceConfig", "VolumeSizeInGB"): (1, None),
}
# List shape -> the member that must differ between its items.
_UNIQUE_MEMBERS = {"InputDataConfig": "ChannelName"}

# Operations are looked up in this order; no name occurs in both.
_SERVICES = ("sagemaker-runtime", "sagemaker")
# The error each service answers with (sagemaker-runtime's model declares its own).
_ERROR_CODES = {"sagemaker": "ValidationException", "sagemaker-runtime": "ValidationError"}
_CONTENT_TYPES = {"sagemaker": "application/x-amz-json-1.1", "sagemaker-runtime": "application/json"}

_HUMAN_SHOWN_CHARS = 60
# Backtracking-prone patterns (policy documents) can take seconds on long values; this bounds
# them. Short values cannot take long, and skip the cost of arming the timer.
_PATTERN_TIMEOUT_SECONDS = 0.5
_PATTERN_TIMEOUT_FROM_CHARS = 256


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a request breaks AWS's rules.

    path: where, in the request's own terms: ``InputDataConfig[2].ChannelName``,
        ``HyperParameters.learning_rate`` (indexes from 0; a map entry by its key).
    member: where, as AWS prints it: ``inputDataConfig.3.member.channelName``. AWS reports a
        map's bad keys or values at the map itself (``hyperParameters``).
    kind: "required", "type", "unknown", "union", "pattern", "enum", "min_length",
        "max_length", "min_value", "max_value", "min_entries", "max_entries" or "duplicate".
    message: one sentence for a person, to show next to a form field.
    aws_message: how AWS words this problem inside its error message; None where AWS does not
        answer with a validation error (a wrong type fails to parse, an unknown member is
        ignored): boto3 refuses both before sending.
    origin: "sdk" when boto3 itself refuses it before sending, "model" when AWS refuses it for a
        constraint of its model, "service" for a rule AWS enforces beyond its model.
    """

    path: str
    member: str
    kind: str
    message: str
    aws_message: str | None
    origin: Origin


def validate(operation: str, params: Mapping[str, Any]) -> list[Problem]:
    """Every problem AWS (or boto3 before it) would find in this request; [] when it is valid.

    ``operation`` is the API name (``CreateTrainingJob``, ``InvokeEndpoint``, ...); ``params``
    is what would be passed to the boto3 method of that name. Raises ValueError for an
    operation neither SageMaker model knows.
    """
    _, shape = _operation(operation)
    problems: list[Problem] = []
    _CHECKS[shape.type](shape, params, None, problems)
    return problems


def check(operation: str, params: Mapping[str, Any]) -> None:
    """Refuse the request as the real service, called through boto3, would; else return.

    Raises botocore's ParamValidationError, with botocore's own report, for what boto3 refuses
    before sending (a missing required member, a wrong type, an unknown member, a value below a
    minimum): the ``sagemaker`` backend never gets further with such a request either.
    Otherwise raises ClientError as AWS answers: HTTP 400, code ValidationException
    (ValidationError for sagemaker-runtime, as its model declares) and the message of
    ``aws_error_message``.
    """
    problems = validate(operation, params)
    if not problems:
        return
    if any(problem.origin == "sdk" for problem in problems):
        model, _ = _operation(operation)
        input_shape = model.botocore_model.operation_model(operation).input_shape
        report = ParamValidator().validate(params, input_shape)
        if report.has_errors():
            raise ParamValidationError(report=report.generate_report())
    raise validation_error(operation, problems)


def entry_field(problem: Problem) -> str:
    """For a problem of a map entry (``HyperParameters.lr``): ``"key"`` when the entry's name
    breaks a rule, else ``"value"`` (AWS words the two apart: "Map keys"/"Map value")."""
    return "key" if problem.aws_message and "Map keys must satisfy" in problem.aws_message else "value"


def enum_values(shape_name: str, service: str = "sagemaker") -> list[str]:
    """The values an enum shape of the model allows, in the model's order."""
    return list(_model(service).shape(shape_name).enum_order)


def validation_error(operation: str, problems: Sequence[Problem]) -> ClientError:
    """The ClientError AWS answers this operation with for these problems."""
    model, _ = _operation(operation)
    message = aws_error_message(problems) or problems[0].message
    response: dict[str, Any] = {
        "Error": {"Code": _ERROR_CODES[model.service], "Message": message},
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 400,
            "HTTPHeaders": {"content-type": _CONTENT_TYPES[model.service]},
            "RetryAttempts": 0,
        },
    }
    return ClientError(response, operation)


def aws_error_message(problems: Sequence[Problem]) -> str:
    """AWS's message for these problems.

    AWS checks its model's constraints first and reports all of them in one message
    ("2 validation errors detected: Value ... ; Value ..."), each at most once; only a request
    that passes them reaches the service's own rules, of which it reports the first.
    """
    constraints = list(
        dict.fromkeys(p.aws_message for p in problems if p.aws_message and p.origin != "service")
    )
    if constraints:
        count = len(constraints)
        return f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(constraints)
    return next((p.aws_message for p in problems if p.aws_message), "")


# ---------------------------------------------------------------------------------------------
# The model, compiled


@dataclass(eq=False, slots=True)
class _Shape:
    name: str
    type: str
    sensitive: bool = False
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    matcher: Any = None  # a compiled regex.Pattern
    enum: frozenset[str] | None = None
    enum_order: tuple[str, ...] = ()
    members: dict[str, _Member] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    union: bool = False
    item: _Shape | None = None
    key: _Shape | None = None
    value: _Shape | None = None
    unique_by: str | None = None
    constraints: str = ""  # "[Member must ..., ...]", as AWS lists a map key's or value's rules


@dataclass(eq=False, slots=True)
class _Member:
    name: str
    aws_name: str
    shape: _Shape
    label: str
    jsonvalue: bool = False
    service_min: int | None = None
    service_max: int | None = None


class _Model:
    """One service's model from botocore, compiled shape by shape as requests need them."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.raw = botocore.loaders.Loader().load_service_model(service, "service-2")
        self._shapes: dict[str, _Shape] = {}

    @functools.cached_property
    def botocore_model(self) -> botocore.model.ServiceModel:
        return botocore.model.ServiceModel(self.raw, service_name=self.service)

    def shape(self, name: str) -> _Shape:
        compiled = self._shapes.get(name)
        if compiled is None:
            raw = self.raw["shapes"][name]
            # Registered before its members are compiled: shapes may contain themselves.
            compiled = self._shapes[name] = _Shape(name, raw["type"])
            self._fill(compiled, raw)
        return compiled

    def _fill(self, shape: _Shape, raw: Mapping[str, Any]) -> None:
        shape.sensitive = bool(raw.get("sensitive"))
        shape.min, shape.max = raw.get("min"), raw.get("max")
        if "pattern" in raw:
            shape.pattern = raw["pattern"]
            shape.matcher = compile_java_pattern(raw["pattern"])
        if "enum" in raw:
            shape.enum_order = tuple(raw["enum"])
            shape.enum = frozenset(shape.enum_order)
        if shape.type == "structure":
            shape.required = tuple(raw.get("required", ()))
            shape.union = bool(raw.get("union"))
            for name, ref in raw.get("members", {}).items():
                shape.members[name] = self._member(shape.name, name, ref)
        elif shape.type == "list":
            shape.item = self.shape(raw["member"]["shape"])
            shape.unique_by = _UNIQUE_MEMBERS.get(shape.name)
        elif shape.type == "map":
            shape.key = self.shape(raw["key"]["shape"])
            shape.value = self.shape(raw["value"]["shape"])
        shape.constraints = "[" + ", ".join(_constraint_texts(shape)) + "]"

    def _member(self, structure: str, name: str, ref: Mapping[str, Any]) -> _Member:
        target = self.shape(ref["shape"])
        member = _Member(
            name=name,
            aws_name=name[:1].lower() + name[1:],
            shape=target,
            label=_LABELS.get(name) or _LABELS.get(target.name) or _words(name),
            jsonvalue=bool(ref.get("jsonvalue")),
        )
        low, high = _SERVICE_BOUNDS.get((structure, name), (None, None))
        if low is not None and (target.min is None or target.min < low):
            member.service_min = low
        if high is not None and (target.max is None or target.max > high):
            member.service_max = high
        return member


@functools.cache
def _model(service: str) -> _Model:
    return _Model(service)


def preload() -> None:
    """Load the service models now (a server process at start-up: ``webapp.wsgi.settle``) rather
    than in the first request that validates against them."""
    for service in _SERVICES:
        _model(service)


@functools.cache
def _operation(operation: str) -> tuple[_Model, _Shape]:
    # Compiling registers a shape before filling it in: one thread at a time, so that no other
    # thread validates against a shape still being filled in. Once cached, no lock is taken.
    with _COMPILING:
        for service in _SERVICES:
            model = _model(service)
            spec = model.raw["operations"].get(operation)
            if spec is not None:
                if "input" not in spec:
                    return model, _Shape(f"{operation}Input", "structure")
                return model, model.shape(spec["input"]["shape"])
    raise ValueError(f"{operation!r} is not an operation of SageMaker or SageMaker Runtime")


_COMPILING = threading.Lock()


def _constraint_texts(shape: _Shape) -> list[str]:
    unit = "length" if shape.type in ("string", "blob", "list", "map") else "value"
    texts = []
    if shape.max is not None:
        texts.append(f"Member must have {unit} less than or equal to {shape.max}")
    if shape.min is not None:
        texts.append(f"Member must have {unit} greater than or equal to {shape.min}")
    if shape.pattern is not None:
        texts.append(f"Member must satisfy regular expression pattern: {shape.pattern}")
    if shape.enum is not None:
        texts.append(f"Member must satisfy enum value set: [{', '.join(shape.enum_order)}]")
    return texts


def _matches(shape: _Shape, value: str) -> bool:
    if len(value) < _PATTERN_TIMEOUT_FROM_CHARS:
        return shape.matcher.fullmatch(value) is not None
    try:
        return shape.matcher.fullmatch(value, timeout=_PATTERN_TIMEOUT_SECONDS) is not None
    except TimeoutError:
        logger.warning("Pattern of %s gave up on a %d-character value", shape.name, len(value))
        return True  # undecided: let AWS be the judge rather than refuse a valid request


# ---------------------------------------------------------------------------------------------
# Walking a request
#
# A location is None (the request) or (parent, step), where a step is a _Member, a list index
# or ("entry", key, label of its values) for a map entry. Paths are only rendered for problems.

Loc = tuple[Any, Any] | None
Sized = Sequence[Any] | Mapping[Any, Any]
_Check = Callable[[_Shape, Any, Loc, list[Problem]], None]


def _check_structure(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, dict):
        out.append(_type_problem(shape, value, loc))
        return
    members = shape.members
    for name in shape.required:
        if value.get(name) is None:
            member = members[name]
            where = (loc, member)
            out.append(
                _problem(
                    where,
                    "required",
                    "sdk",
                    f"{member.label} is required.",
                    f"Value null at '{_aws_path(where)}' failed to satisfy constraint: "
                    "Member must not be null",
                )
            )
    if shape.union and len(value) != 1:
        names = ", ".join(members)
        out.append(
            _problem(loc, "union", "sdk", f"{_label(loc, shape)} must set exactly one of: {names}.", None)
        )
    for name, item in value.items():
        member = members.get(name)
        if member is None:
            out.append(_unknown_problem(shape, str(name), loc))
            continue
        where = (loc, member)
        if item is None:
            if name not in shape.required:
                out.append(_type_problem(member.shape, item, where))
            continue
        if member.jsonvalue:
            try:
                json.dumps(item)
            except (TypeError, ValueError):
                out.append(_problem(where, "type", "sdk", f"{member.label} must be JSON.", None))
            continue
        target = member.shape
        _CHECKS[target.type](target, item, where, out)
        if member.service_min is not None or member.service_max is not None:
            _check_service_bounds(member, item, where, out)


def _check_string(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, str):
        out.append(_type_problem(shape, value, loc))
        return
    for kind, origin, constraint in _string_violations(shape, value):
        label = _label(loc, shape)
        message = _string_message(kind, label, value, shape)
        out.append(_problem(loc, kind, origin, message, _aws_value_message(shape, value, loc, constraint)))


def _string_violations(shape: _Shape, value: str) -> list[tuple[str, Origin, str]]:
    size = len(value)
    bad_pattern = shape.matcher is not None and not _matches(shape, value)
    if not (
        bad_pattern
        or (shape.max is not None and size > shape.max)
        or (shape.min is not None and size < shape.min)
        or (shape.enum is not None and value not in shape.enum)
    ):
        return []  # the usual case, decided without building any text
    found: list[tuple[str, Origin, str]] = []
    if bad_pattern:
        found.append(("pattern", "model", f"Member must satisfy regular expression pattern: {shape.pattern}"))
    if shape.max is not None and size > shape.max:
        found.append(("max_length", "model", f"Member must have length less than or equal to {shape.max}"))
    if shape.min is not None and size < shape.min:
        found.append(("min_length", "sdk", f"Member must have length greater than or equal to {shape.min}"))
    if shape.enum is not None and value not in shape.enum:
        found.append(
            ("enum", "model", f"Member must satisfy enum value set: [{', '.join(shape.enum_order)}]")
        )
    return found


def _check_number(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    # The same types botocore accepts (so True passes as an integer, as it does there).
    accepted = (int,) if shape.type in ("integer", "long") else (float, Decimal, int)
    if not isinstance(value, accepted):
        out.append(_type_problem(shape, value, loc))
        return
    label = _label(loc, shape)
    unit = _unit(loc)
    if shape.min is not None and value < shape.min:
        text = f"Member must have value greater than or equal to {shape.min}"
        message = f"{label} must be at least {_amount(shape.min, unit)}, not {_number(value)}."
        out.append(_problem(loc, "min_value", "sdk", message, _aws_value_message(shape, value, loc, text)))
    if shape.max is not None and value > shape.max:
        text = f"Member must have value less than or equal to {shape.max}"
        message = f"{label} must be at most {_amount(shape.max, unit)}, not {_number(value)}."
        out.append(_problem(loc, "max_value", "model", message, _aws_value_message(shape, value, loc, text)))


def _check_boolean(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, bool):
        out.append(_type_problem(shape, value, loc))


def _check_timestamp(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    try:
        parse_to_aware_datetime(value)  # what botocore accepts: datetimes, ISO 8601, epochs
    except (TypeError, ValueError, AttributeError):
        out.append(_type_problem(shape, value, loc))


def _check_blob(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if isinstance(value, bytes | bytearray):
        size: int | None = len(value)
    elif isinstance(value, str):
        size = len(value.encode())  # botocore sends text as UTF-8
    elif hasattr(value, "read"):
        size = _remaining_bytes(value)
    else:
        out.append(_type_problem(shape, value, loc))
        return
    if size is None:
        return
    label = _label(loc, shape)
    # botocore does not check a blob's size: both limits are AWS's.
    if shape.max is not None and size > shape.max:
        text = f"Member must have length less than or equal to {shape.max}"
        message = f"{label} must be at most {_bytes(shape.max)}, not {_bytes(size)}."
        out.append(_problem(loc, "max_length", "model", message, _aws_value_message(shape, value, loc, text)))
    if shape.min is not None and size < shape.min:
        text = f"Member must have length greater than or equal to {shape.min}"
        message = f"{label} must be at least {_bytes(shape.min)}, not {_bytes(size)}."
        out.append(_problem(loc, "min_length", "model", message, _aws_value_message(shape, value, loc, text)))


def _remaining_bytes(stream: Any) -> int | None:
    """How much a seekable file-like body would send, without consuming it."""
    try:
        start = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(start)
    except (AttributeError, OSError, ValueError):
        return None
    return end - start


def _check_list(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, list | tuple):
        out.append(_type_problem(shape, value, loc))
        return
    _check_entries(shape, value, loc, out, min_origin="sdk")
    item = shape.item
    assert item is not None
    check = _CHECKS[item.type]
    for index, entry in enumerate(value):
        if entry is None:
            out.append(_type_problem(item, entry, (loc, index)))
        else:
            check(item, entry, (loc, index), out)
    if shape.unique_by is not None:
        _check_unique(shape, value, loc, out)


def _check_map(shape: _Shape, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, dict):
        out.append(_type_problem(shape, value, loc))
        return
    _check_entries(shape, value, loc, out, min_origin="model")  # botocore skips a map's size
    key_shape, value_shape = shape.key, shape.value
    assert key_shape is not None and value_shape is not None
    key_label, value_label = _entry_labels(shape, loc)
    for key, item in value.items():
        where = (loc, ("entry", str(key), value_label))
        if not isinstance(key, str):
            out.append(_type_problem(key_shape, key, where))
            continue
        for kind, origin, _ in _string_violations(key_shape, key):
            message = _string_message(kind, f"{key_label} {_quote(key)}", key, key_shape, quoted=True)
            out.append(_map_problem(shape, value, loc, where, kind, origin, message, "Map keys"))
        if value_shape.type == "string" and isinstance(item, str):
            for kind, origin, _ in _string_violations(value_shape, item):
                message = _string_message(
                    kind, f"{value_label} {_quote(key)}", item, value_shape, quoted=True
                )
                out.append(_map_problem(shape, value, loc, where, kind, origin, message, "Map value"))
        elif item is None:
            out.append(_type_problem(value_shape, item, where))
        else:
            _CHECKS[value_shape.type](value_shape, item, where, out)


def _map_problem(
    shape: _Shape, value: Any, loc: Loc, where: Loc, kind: str, origin: Origin, message: str, part: str
) -> Problem:
    """A bad key or value: AWS reports it at the map, quoting the whole map and listing all the
    rules of the map's keys (or values)."""
    rules = shape.key if part == "Map keys" else shape.value
    assert rules is not None
    aws = _aws_value_message(shape, value, loc, f"{part} must satisfy constraint: {rules.constraints}")
    return Problem(_path(where), _aws_path(loc), kind, message, aws, origin)


def _check_entries(shape: _Shape, value: Sized, loc: Loc, out: list[Problem], min_origin: Origin) -> None:
    count = len(value)
    where = "" if shape.name in _NOUNS else f" in {_label(loc, shape)}"
    if shape.max is not None and count > shape.max:
        text = f"Member must have length less than or equal to {shape.max}"
        message = f"At most {_entries(shape.max, shape)} allowed{where} ({count} given)."
        out.append(
            _problem(loc, "max_entries", "model", message, _aws_value_message(shape, value, loc, text))
        )
    if shape.min is not None and count < shape.min:
        text = f"Member must have length greater than or equal to {shape.min}"
        message = f"At least {_entries(shape.min, shape)} required{where} ({count} given)."
        out.append(
            _problem(loc, "min_entries", min_origin, message, _aws_value_message(shape, value, loc, text))
        )


def _check_unique(shape: _Shape, items: Sequence[Any], loc: Loc, out: list[Problem]) -> None:
    assert shape.item is not None and shape.unique_by is not None
    member = shape.item.members[shape.unique_by]
    seen: set[str] = set()
    for index, item in enumerate(items):
        name = item.get(member.name) if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            where = ((loc, index), member)
            noun = _NOUNS.get(shape.name, ("entry", "entries"))[0]
            message = f"{member.label} {_quote(name)} is used by more than one {noun}."
            aws = (
                f"Duplicate {member.name} '{_shown(name)}' in {_step_name(loc)}: "
                f"each {member.name} must be unique."
            )
            out.append(_problem(where, "duplicate", "service", message, aws))
        seen.add(name)


def _check_service_bounds(member: _Member, value: Any, loc: Loc, out: list[Problem]) -> None:
    if not isinstance(value, int | float | Decimal) or isinstance(value, bool):
        return
    unit = _unit(loc)
    low, high = member.service_min, member.service_max
    if low is not None and value < low:
        message = f"{member.label} must be at least {_amount(low, unit)}, not {_number(value)}."
        aws = f"Invalid {member.name}: {value}. It must be greater than or equal to {low}."
        out.append(_problem(loc, "min_value", "service", message, aws))
    if high is not None and value > high:
        message = f"{member.label} must be at most {_amount(high, unit)}, not {_number(value)}."
        aws = f"Invalid {member.name}: {value}. It must be less than or equal to {high}."
        out.append(_problem(loc, "max_value", "service", message, aws))


_CHECKS: dict[str, _Check] = {
    "structure": _check_structure,
    "string": _check_string,
    "integer": _check_number,
    "long": _check_number,
    "float": _check_number,
    "double": _check_number,
    "boolean": _check_boolean,
    "timestamp": _check_timestamp,
    "blob": _check_blob,
    "list": _check_list,
    "map": _check_map,
}


# ---------------------------------------------------------------------------------------------
# Problems and their words


def _problem(loc: Loc, kind: str, origin: Origin, message: str, aws_message: str | None) -> Problem:
    return Problem(_path(loc), _aws_path(loc), kind, message, aws_message, origin)


def _type_problem(shape: _Shape, value: Any, loc: Loc) -> Problem:
    message = f"{_label(loc, shape)} must be {_TYPE_WORDS[shape.type]}, not {_describe(value)}."
    return _problem(loc, "type", "sdk", message, None)


def _unknown_problem(shape: _Shape, name: str, loc: Loc) -> Problem:
    where = f"in {_path(loc)}" if loc is not None else "in the request"
    message = f"Unknown field {_quote(name)} {where}"
    close = difflib.get_close_matches(name, list(shape.members), n=1)
    message += f" (did you mean {_quote(close[0])}?)." if close else "."
    aws_name = name[:1].lower() + name[1:]
    path = f"{_path(loc)}.{name}" if loc is not None else name
    member = f"{_aws_path(loc)}.{aws_name}" if loc is not None else aws_name
    return Problem(path, member, "unknown", message, None, "sdk")


def _aws_value_message(shape: _Shape, value: Any, loc: Loc, constraint: str) -> str:
    where = _aws_path(loc)
    if shape.sensitive:  # AWS never echoes a sensitive value (the request body, secrets)
        return f"Value at '{where}' failed to satisfy constraint: {constraint}"
    return f"Value '{_shown(value)}' at '{where}' failed to satisfy constraint: {constraint}"


def _string_message(kind: str, label: str, value: str, shape: _Shape, quoted: bool = False) -> str:
    """A person's sentence for one string violation; ``label`` already names the value if quoted."""
    subject = label if quoted else f"{label} {_quote(value)}"
    if kind == "pattern":
        assert shape.pattern is not None
        words = _PATTERN_WORDS.get(shape.pattern) or f"must match the pattern {shape.pattern}"
        return f"{subject} {words}."
    if kind == "max_length":
        return f"{label} must be at most {_number(shape.max)} characters (it has {_number(len(value))})."
    if kind == "min_length":
        if shape.min == 1:
            return f"{label} must not be empty."
        return f"{label} must be at least {_number(shape.min)} characters (it has {_number(len(value))})."
    choices = shape.enum_order
    if len(choices) <= 8:
        return f"{subject} is not one of: {', '.join(choices)}."
    return f"{subject} is not a valid value (for example {', '.join(choices[:3])})."


def _path(loc: Loc) -> str:
    text = ""
    for step in _steps(loc):
        if isinstance(step, _Member):
            text += f".{step.name}" if text else step.name
        elif isinstance(step, int):
            text += f"[{step}]"
        else:
            key = step[1]
            text += f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{json.dumps(key, ensure_ascii=False)}]"
    return text


def _aws_path(loc: Loc) -> str:
    parts: list[str] = []
    for step in _steps(loc):
        if isinstance(step, _Member):
            parts.append(step.aws_name)
        elif isinstance(step, int):
            parts.append(f"{step + 1}.member")
        else:
            parts.append(step[1])
    return ".".join(parts)


def _steps(loc: Loc) -> list[Any]:
    steps = []
    while loc is not None:
        loc, step = loc
        steps.append(step)
    steps.reverse()
    return steps


def _step_name(loc: Loc) -> str:
    return loc[1].name if loc is not None and isinstance(loc[1], _Member) else "the request"


def _label(loc: Loc, shape: _Shape) -> str:
    if loc is None:
        return "The request"
    step = loc[1]
    if isinstance(step, _Member):
        return step.label
    if isinstance(step, tuple):
        return f"{step[2]} {_quote(step[1])}"
    return _LABELS.get(shape.name) or _words(shape.name)


def _entry_labels(shape: _Shape, loc: Loc) -> tuple[str, str]:
    known = _ENTRY_LABELS.get(shape.name)
    if known:
        return known
    label = _label(loc, shape)
    return f"Key in {label}", "Entry"


def _entries(count: float, shape: _Shape) -> str:
    """ "20 channels are", "1 entry is": the start of a sentence counting entries."""
    singular, plural = _NOUNS.get(shape.name, ("entry", "entries"))
    verb = "is" if count == 1 else "are"
    return f"{_number(count)} {singular if count == 1 else plural} {verb}"


def _unit(loc: Loc) -> str:
    name = loc[1].name if loc is not None and isinstance(loc[1], _Member) else ""
    for suffix, unit in _UNITS.items():
        if name.endswith(suffix):
            return unit
    return ""


def _amount(number: float, unit: str) -> str:
    if number == 1:
        unit = unit.removesuffix("s")  # "1 second"
    text = f"{_number(number)}{unit}"
    if unit == " seconds" and number >= 86_400 and number % 86_400 == 0:
        text += f" ({int(number) // 86_400} days)"
    return text


def _number(number: Any) -> str:
    return f"{number:,}" if isinstance(number, int) and not isinstance(number, bool) else str(number)


def _bytes(size: float) -> str:
    text = f"{_number(int(size))} bytes"
    if size >= 1 << 20 and size % (1 << 20) == 0:
        text += f" ({int(size) >> 20} MiB)"
    return text


def _quote(value: str) -> str:
    return f"'{_shown(value, _HUMAN_SHOWN_CHARS)}'"


def _shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """The value as AWS prints it (Java's toString: [a, b], {k=v}), cut after ``limit``."""
    text = _java_text(value, limit + 1)
    return text if len(text) <= limit else text[:limit] + "…"


def _java_text(value: Any, budget: int) -> str:
    """Java's toString of ``value``, given up once ``budget`` characters are written."""
    if isinstance(value, dict):
        opening, closing = "{", "}"
        items: Any = ((f"{key}=", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        opening, closing = "[", "]"
        items = (("", item) for item in value)
    else:
        return _scalar_text(value)[:budget]
    text = opening
    for index, (prefix, item) in enumerate(items):
        if len(text) >= budget:
            return text
        text += (", " if index else "") + prefix
        text += _java_text(item, budget - len(text))
    return text + closing


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return str(value)


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _words(name: str) -> str:
    """``MaxWaitTimeInSeconds`` -> "Max wait time in seconds"."""
    words = _CAMEL_BOUNDARY.split(name)
    kept = [word if word.isupper() or any(c.isdigit() for c in word) else word.lower() for word in words]
    text = " ".join(kept)
    return text[:1].upper() + text[1:]


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_PLAIN_KEY = re.compile(r"[^.\[\]\"'\s]+")


_TYPE_WORDS = {
    "structure": "a mapping of fields",
    "string": "text",
    "integer": "a whole number",
    "long": "a whole number",
    "float": "a number",
    "double": "a number",
    "boolean": "true or false",
    "timestamp": "a date and time",
    "blob": "bytes",
    "list": "a list",
    "map": "a mapping of names to values",
}

# Names a person recognises, by member name or else by shape name; others are spelled out
# from the member name (_words).
_LABELS = {
    "TrainingJobName": "Job name",
    "EndpointConfigName": "Endpoint configuration name",
    "RoleArn": "Role ARN",
    "ExecutionRoleArn": "Execution role ARN",
    "S3Uri": "S3 URI",
    "S3OutputPath": "S3 output path",
    "ModelDataUrl": "Model data URL",
    "InputDataConfig": "Input data",
    "HyperParameters": "Hyperparameters",
    "MaxRuntimeInSeconds": "Maximum runtime",
    "MaxWaitTimeInSeconds": "Maximum wait time",
    "VolumeSizeInGB": "Volume size",
    "VpcConfig": "VPC configuration",
    "KmsKeyId": "KMS key ID",
    "VolumeKmsKeyId": "Volume KMS key ID",
    "TagKey": "Tag key",
    "TagValue": "Tag value",
    "SecurityGroupId": "Security group ID",
    "SubnetId": "Subnet ID",
    "Body": "Request body",
    "CustomAttributes": "Custom attributes",
}
# Map shape -> (label of a key, label of an entry by its key).
_ENTRY_LABELS = {
    "HyperParameters": ("Hyperparameter name", "Hyperparameter"),
    "TrainingEnvironmentMap": ("Environment variable name", "Environment variable"),
    "EnvironmentMap": ("Environment variable name", "Environment variable"),
}
# List or map shape -> what one entry is called.
_NOUNS = {
    "InputDataConfig": ("channel", "channels"),
    "HyperParameters": ("hyperparameter", "hyperparameters"),
    "TrainingEnvironmentMap": ("environment variable", "environment variables"),
    "EnvironmentMap": ("environment variable", "environment variables"),
    "TagList": ("tag", "tags"),
    "ProductionVariantList": ("production variant", "production variants"),
    "ContainerDefinitionList": ("container", "containers"),
    "VpcSecurityGroupIds": ("security group", "security groups"),
    "Subnets": ("subnet", "subnets"),
    "MetricDefinitionList": ("metric definition", "metric definitions"),
}
_UNITS = {"InSeconds": " seconds", "InMilliseconds": " ms", "InGB": " GB", "InMB": " MB"}
# The model's patterns, said in words (anything else: "must match the pattern ...").
_NAME_WORDS = "may only contain letters, digits and hyphens, and must start and end with a letter or digit"
_PATTERN_WORDS = {
    "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}": _NAME_WORDS,
    "[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?": _NAME_WORDS,
    "^[a-zA-Z0-9](-*[a-zA-Z0-9])*": _NAME_WORDS,
    "[A-Za-z0-9\\.\\-_]+": "may only contain letters, digits, '.', '-' and '_'",
    "(https|s3)://([^/]+)/?(.*)": "must be an s3:// or https:// address with a bucket, like s3://bucket/prefix",
    "[a-zA-Z_][a-zA-Z0-9_]*": "must start with a letter or '_' and contain only letters, digits and '_'",
    "([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)": "may only contain letters, digits, spaces and _ . : / = + - @",
    "arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+": (
        "must be an IAM role ARN, like arn:aws:iam::123456789012:role/MyRole"
    ),
    ".*": "must be a single line",
    "[-0-9a-zA-Z]+": "may only contain letters, digits and hyphens",
    "[\\S]+": "must not contain spaces",
    "[a-zA-Z0-9:/_-]*": "may only contain letters, digits, ':', '/', '_' and '-'",
    "\\p{ASCII}*": "may only contain ASCII characters",
}
