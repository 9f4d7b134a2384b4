"""Forms that validate what the job pages receive (GET filters included)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from jobs import metrics
from jobs.models import TrainingJob

#: ``?sort=`` values accepted, each mapped to its ``order_by`` (ties broken by newest id).
SORTS = {
    "created": ("created_at", "id"),
    "-created": ("-created_at", "-id"),
    "name": ("name",),
    "-name": ("-name",),
    "status": ("status", "-created_at", "-id"),
    "-status": ("-status", "-created_at", "-id"),
}
DEFAULT_SORT = "-created"


#: Every date a form takes lies in these years, so that a day more or less (a range's end, a
#: time zone) never leaves what ``datetime`` holds: year 9999 would overflow.
DATES = [
    MinValueValidator(date(1970, 1, 1), "Pick a date from 1970 on."),
    MaxValueValidator(date(9000, 12, 31), "Pick a date before the year 9001."),
]


#: The statistics of a metric the history shows, sorts and filters by (``MetricSeries``).
METRIC_STATS = ("last", "min", "max")
#: ``?mf=name:stat:OP:value`` comparisons.
METRIC_OPS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥"}
MAX_COLUMNS = 12
MAX_METRIC_FILTERS = 5


class HistoryColumn:
    """A column the user added to the history: a metric's statistic (``metric:<name>:<stat>``,
    sortable) or a hyperparameter's value (``hp:<key>``). A metric's name may hold colons
    (``validation:auc``): the statistic is what follows the last one."""

    def __init__(self, kind: str, name: str, stat: str = "") -> None:
        self.kind, self.name, self.stat = kind, name, stat

    @classmethod
    def parse(cls, spec: str) -> HistoryColumn:
        kind, _, rest = spec.partition(":")
        if kind == "hp" and rest:
            if len(rest) > 256:
                raise forms.ValidationError("A hyperparameter's key is at most 256 characters.")
            return cls("hp", rest)
        if kind == "metric":
            name, _, stat = rest.rpartition(":")
            return cls("metric", _metric_name(name, spec), _metric_stat(stat, spec))
        raise forms.ValidationError(
            f"{_short(spec)!r} is not a column: write metric:NAME:last|min|max or hp:KEY (e.g. "
            "metric:validation:loss:min, hp:lr)."
        )

    @property
    def spec(self) -> str:
        return f"metric:{self.name}:{self.stat}" if self.kind == "metric" else f"hp:{self.name}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.stat})" if self.kind == "metric" else self.name

    @property
    def sortable(self) -> bool:
        return self.kind == "metric"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HistoryColumn) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"HistoryColumn({self.spec!r})"


class MetricFilter:
    """``?mf=<name>:<stat>:<op>:<value>``: jobs whose metric's statistic compares so."""

    def __init__(self, name: str, stat: str, op: str, value: float) -> None:
        self.name, self.stat, self.op, self.value = name, stat, op, value

    @classmethod
    def parse(cls, spec: str) -> MetricFilter:
        head, _, value = spec.rpartition(":")
        head, _, op = head.rpartition(":")
        name, _, stat = head.rpartition(":")
        if not (name and stat and op):
            raise forms.ValidationError(
                f"{_short(spec)!r} is not a metric filter: write NAME:STAT:OP:VALUE, e.g. loss:min:lt:0.3 "
                f"(STAT one of {', '.join(METRIC_STATS)}; OP one of {', '.join(METRIC_OPS)})."
            )
        if op not in METRIC_OPS:
            raise forms.ValidationError(
                f"{_short(op)!r} in {_short(spec)!r} is not a comparison: use one of {', '.join(METRIC_OPS)}."
            )
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")) or len(value) > 50:
            raise forms.ValidationError(f"{_short(value)!r} in {_short(spec)!r} is not a number.")
        return cls(_metric_name(name, spec), _metric_stat(stat, spec), op, number)

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.stat}:{self.op}:{self.value:g}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.stat}) {METRIC_OPS[self.op]} {self.value:g}"


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "…"


def _metric_name(name: str, spec: str) -> str:
    if not name:
        raise forms.ValidationError(f"{_short(spec)!r} names no metric.")
    if len(name) > metrics.MAX_NAME:
        raise forms.ValidationError(f"A metric's name is at most {metrics.MAX_NAME} characters.")
    return name


def _metric_stat(stat: str, spec: str) -> str:
    if stat not in METRIC_STATS:
        raise forms.ValidationError(
            f"{_short(stat)!r} in {_short(spec)!r} is not a statistic: use one of {', '.join(METRIC_STATS)}."
        )
    return stat


class SpecListField(forms.Field):
    """A GET parameter given any number of times (``?col=…&col=…``), each value parsed by
    ``parse``; blanks are ignored, repeats kept once, at most ``max_items``."""

    widget = forms.MultipleHiddenInput

    def __init__(self, parse: Any, max_items: int, noun: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.parse, self.max_items, self.noun = parse, max_items, noun

    def to_python(self, value: Any) -> list[Any]:
        values = [v.strip() for v in (value or []) if isinstance(v, str) and v.strip()]
        if len(values) > self.max_items:
            raise forms.ValidationError(f"At most {self.max_items} {self.noun}s; {len(values)} given.")
        parsed, errors = [], []
        for v in values:
            if len(v) > 600:
                errors.append(forms.ValidationError(f"A {self.noun} is at most 600 characters."))
                continue
            try:
                item = self.parse(v)
            except forms.ValidationError as exc:
                errors.append(exc)
                continue
            if item.spec not in {p.spec for p in parsed}:
                parsed.append(item)
        if errors:
            raise forms.ValidationError(errors)
        return parsed


def parse_sort(value: str) -> tuple[str, HistoryColumn | None, bool]:
    """``(sort, metric column or None, descending)`` of a ``?sort=`` value."""
    if value in SORTS:
        return value, None, False
    descending = value.startswith("-")
    column = HistoryColumn.parse(value.removeprefix("-"))
    if not column.sortable:
        raise forms.ValidationError("Only metric columns (metric:NAME:STAT) can be sorted by.")
    return value, column, descending


class HistoryFilterForm(forms.Form):
    """The history page's filters; ``cleaned_data`` holds typed values (blank means "any").

    Besides the fields shown as such, ``col`` (columns added, in the URL so a link shows the
    same table) and ``mf`` (metric filters) are lists; ``sort`` is one of ``SORTS`` or a metric
    column, ``-`` first for descending (``?sort=metric:loss:min``: lowest loss first)."""

    status = forms.ChoiceField(choices=[("", "Any status"), *TrainingJob.Status.choices], required=False)
    owner = forms.CharField(max_length=150, required=False, label="Owner (username)")
    created_from = forms.DateField(
        required=False, label="Created from", widget=forms.DateInput({"type": "date"}), validators=DATES
    )
    created_to = forms.DateField(
        required=False, label="Created to", widget=forms.DateInput({"type": "date"}), validators=DATES
    )
    q = forms.CharField(max_length=200, required=False, label="Search")
    sort = forms.CharField(max_length=600, required=False, widget=forms.HiddenInput)
    col = SpecListField(HistoryColumn.parse, MAX_COLUMNS, "column", label="Columns")
    mf = SpecListField(MetricFilter.parse, MAX_METRIC_FILTERS, "metric filter", label="Metric filters")

    def clean_owner(self) -> str:
        return self.cleaned_data["owner"].strip()

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip()

    def clean_sort(self) -> str:
        value = self.cleaned_data["sort"] or DEFAULT_SORT
        try:
            parse_sort(value)
        except forms.ValidationError as exc:
            raise forms.ValidationError(
                f"{_short(value)!r} is not a sort: use {', '.join(SORTS)}, or a metric column such as "
                f"metric:loss:min (-metric:loss:min for highest first). {exc.messages[0]}"
            ) from None
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        return data


# --- the new-job form ---------------------------------------------------------------------------

NAME_HELP = "Letters, digits and hyphens; up to 63 characters; unique."
SHA256 = r"[0-9a-f]{64}"
#: A SageMaker training job's name.
JOB_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input (Django's documented pattern); cleans to a list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("allow_empty_file", True)  # an empty __init__.py is code too
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(d, initial) for d in data if d]
        return [super().clean(data, initial)] if data else []


def instance_type_choices() -> list[tuple[str, str]]:
    """The API's instance types (or the ones settings allow), the default first."""
    from django.conf import settings

    from jobs.api_limits import enum_values

    allowed = list(settings.ANYJOB_INSTANCE_TYPES) or enum_values("TrainingInstanceType")
    default = settings.ANYJOB_DEFAULT_INSTANCE_TYPE
    ordered = [default, *[t for t in allowed if t != default]] if default in allowed else allowed
    return [(t, t) for t in ordered]


class NewJobForm(forms.Form):
    """The job's own fields; channels, hyperparameters, environment and tags are row formsets.

    Field checks here are the shape a person types (numbers, lengths); the API's rules are
    checked afterwards on the request itself (``jobs.newjob.validate``), from one place.
    """

    name = forms.CharField(max_length=63, help_text=NAME_HELP, label="Job name")
    code = MultipleFileField(
        required=False,
        label="Code",
        help_text="A .py file, several files, or a .zip / .tar.gz of your source folder.",
    )
    source_sha256 = forms.RegexField(regex=SHA256, required=False, widget=forms.HiddenInput)
    entry_point = forms.CharField(max_length=255, required=False, label="Entry point")
    # Hidden fields hold what the page put there; anything else is refused (clean()).
    parent = forms.RegexField(regex=JOB_NAME, max_length=63, required=False, widget=forms.HiddenInput)
    instance_type = forms.ChoiceField(choices=instance_type_choices, label="Instance type")
    instance_count = forms.IntegerField(min_value=1, max_value=1000, initial=1, label="Instance count")
    volume_size_gb = forms.IntegerField(min_value=1, max_value=16384, initial=30, label="Volume size (GB)")
    max_runtime_seconds = forms.IntegerField(
        min_value=1, max_value=2_419_200, initial=86_400, label="Max runtime (seconds)"
    )
    output_path = forms.CharField(max_length=1024, required=False, label="Output path", strip=True)
    network_isolation = forms.BooleanField(required=False, label="Network isolation")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from django.conf import settings

        super().__init__(*args, **kwargs)
        self.fields["instance_type"].initial = settings.ANYJOB_DEFAULT_INSTANCE_TYPE

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()

    def clean_entry_point(self) -> str:
        return self.cleaned_data["entry_point"].strip()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for field in self.hidden_fields():  # not shown next to anything: said at the top
            if field.errors:
                self.add_error(None, f"The form was changed outside this page ({field.name}): open it again.")
        return data


class RowForm(forms.Form):
    """A row of a table on the form: a row left blank is ignored."""

    def is_blank(self) -> bool:
        data = getattr(self, "cleaned_data", None) or {}
        return not any(data.get(f) for f in self.key_fields)

    key_fields: tuple[str, ...] = ()


class ChannelForm(RowForm):
    key_fields = ("name", "uri")
    INPUT_MODES = [("", "Job default (File)"), ("File", "File"), ("FastFile", "FastFile"), ("Pipe", "Pipe")]

    name = forms.CharField(max_length=64, label="Channel")
    uri = forms.CharField(max_length=1024, label="S3 prefix or file:// path")
    content_type = forms.CharField(max_length=256, required=False, label="Content type")
    input_mode = forms.ChoiceField(choices=INPUT_MODES, required=False, label="Input mode")


class HyperparameterForm(RowForm):
    key_fields = ("key", "value")
    TYPES = [("string", "string"), ("number", "number"), ("boolean", "boolean"), ("json", "JSON")]

    key = forms.CharField(max_length=256, label="Key")
    value = forms.CharField(max_length=2500, required=False, strip=False, label="Value")
    type = forms.ChoiceField(choices=TYPES, initial="string", label="Type")

    def clean_key(self) -> str:
        # The container gives the script each key as the variable SM_HP_<KEY> (environment.py,
        # env_name), and a variable's name ends at its first "=".
        key = self.cleaned_data["key"]
        if "=" in key:
            name, _, value = key.partition("=")
            raise forms.ValidationError(
                f"A key cannot contain '=': the script gets each key as the environment variable "
                f"SM_HP_<KEY>, whose name cannot hold one. Did you mean the key {name.strip()!r} with "
                f"the value {value.strip()!r}?"
            )
        return key


#: How a secret's value field looks: never filled in by the server (a clone, a form sent back).
SECRET_VALUE_ATTRS = {"autocomplete": "off", "placeholder": "type the secret value"}


class EnvironmentForm(RowForm):
    """One environment variable. A *secret* one is sent with the request and never shown
    again: its value field is a password field the server never fills in."""

    key_fields = ("key", "value")

    key = forms.CharField(max_length=512, label="Variable")
    value = forms.CharField(max_length=512, required=False, strip=False, label="Value")
    secret = forms.BooleanField(required=False, label="Secret")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["value"].widget.attrs["data-env-value"] = ""
        self.fields["secret"].widget.attrs["data-env-secret"] = ""
        if self.marked_secret():
            field = self.fields["value"]
            field.widget = forms.PasswordInput(render_value=False, attrs={**SECRET_VALUE_ATTRS})
            field.widget.attrs.update({**field.widget_attrs(field.widget), "data-env-value": ""})

    def marked_secret(self) -> bool:
        """Whether the row is secret, before or without validation (to choose its widget)."""
        if self.is_bound:
            return self.fields["secret"].widget.value_from_datadict(
                self.data, self.files, self.add_prefix("secret")
            )
        return bool((self.initial or {}).get("secret"))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("secret") and data.get("key") and data.get("value") == "":
            self.add_error(
                "value",
                "Type the secret's value: it is never shown again, so a cloned form or a form "
                "sent back with a problem leaves it empty.",
            )
        return data


class TagForm(RowForm):
    key_fields = ("key", "value")

    key = forms.CharField(max_length=128, label="Tag")
    value = forms.CharField(max_length=256, required=False, label="Value")


class RowFormSet(forms.BaseFormSet):
    """Rows added and removed in the browser. Every row is optional (a blank one is ignored),
    pre-filled rows (a clone) are shown as rows to edit, and ``limit`` counts filled rows.
    ``unique`` names the field that must differ between rows."""

    limit = 20
    unique = "key"
    noun = "row"

    def initial_form_count(self) -> int:
        return 0

    def total_form_count(self) -> int:
        if self.is_bound:
            return super().total_form_count()
        return max(len(self.initial or []) + self.extra, self.min_num)

    def rows(self) -> list[tuple[int, dict[str, Any]]]:
        """``(form index, cleaned data)`` of the filled, kept rows without errors (after
        ``is_valid()``)."""
        return [
            (i, form.cleaned_data)
            for i, form in enumerate(self.forms)
            if form.has_changed()
            and not form.errors
            and not self._should_delete_form(form)
            and not form.is_blank()
        ]

    def clean(self) -> None:
        if any(self.errors):
            return
        rows = self.rows()
        if len(rows) > self.limit:
            raise forms.ValidationError(f"At most {self.limit} {self.noun}s; this form has {len(rows)}.")
        seen: dict[str, int] = {}
        for i, data in rows:
            value = data.get(self.unique, "")
            if value in seen:
                self.forms[i].add_error(self.unique, f"{value!r} is used by more than one {self.noun}.")
            seen[value] = i


def row_formset(
    form: type[RowForm], *, limit: int, unique: str, noun: str, extra: int = 1
) -> type[RowFormSet]:
    base = type(f"{form.__name__}Set", (RowFormSet,), {"limit": limit, "unique": unique, "noun": noun})
    # absolute_max bounds what a crafted TOTAL_FORMS can make the server build.
    return forms.formset_factory(
        form, formset=base, extra=extra, can_delete=True, max_num=limit + 50, absolute_max=limit + 50
    )


def environment_of(rows: RowFormSet) -> tuple[dict[str, str], list[str]]:
    """The environment map of a valid environment table, and the keys marked secret."""
    kept = [r for _, r in rows.rows()]
    return {r["key"]: r["value"] for r in kept}, [r["key"] for r in kept if r.get("secret")]


class MetricDefinitionForm(RowForm):
    """One of SageMaker's ``MetricDefinitions``: a metric's name and the regular expression whose
    first group captures its value in the log. Whether the expression works (in Python and on
    AWS) is checked by ``jobs.metrics.check_definitions``, on the whole table."""

    key_fields = ("name", "regex")

    name = forms.CharField(max_length=metrics.MAX_NAME, label="Metric")
    regex = forms.CharField(max_length=metrics.MAX_REGEX, strip=False, label="Regular expression")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].widget.attrs.update({"data-metric-name": "", "autocomplete": "off"})
        self.fields["regex"].widget.attrs.update(
            {"data-metric-regex": "", "autocomplete": "off", "spellcheck": "false"}
        )

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()


class MetricDefinitionRows(RowFormSet):
    """The metric table. Its own check is SageMaker's count; names that collide (regardless of
    case) and expressions that do not compile or capture no number are found by
    ``jobs.metrics.check_definitions`` (``NewJob._check_metrics``) and put on their row."""

    def clean(self) -> None:
        if any(self.errors):
            return
        rows = self.rows()
        if len(rows) > self.limit:
            raise forms.ValidationError(
                f"At most {self.limit} {self.noun}s (SageMaker's limit); this form has {len(rows)}."
            )

    def definitions(self) -> list[dict[str, str]]:
        """``[{"name", "regex"}]`` of the filled rows (``TrainingJob.metric_definitions``)."""
        return [{"name": r["name"], "regex": r["regex"]} for _, r in self.rows()]


ChannelFormSet = row_formset(ChannelForm, limit=20, unique="name", noun="channel")
HyperparameterFormSet = row_formset(HyperparameterForm, limit=100, unique="key", noun="hyperparameter")
EnvironmentFormSet = row_formset(EnvironmentForm, limit=100, unique="key", noun="environment variable")
TagFormSet = row_formset(TagForm, limit=50, unique="key", noun="tag", extra=0)
MetricDefinitionFormSet = forms.formset_factory(
    MetricDefinitionForm,
    formset=type(
        "MetricDefinitionRowsSet",
        (MetricDefinitionRows,),
        {"limit": metrics.MAX_DEFINITIONS, "unique": "name", "noun": "metric"},
    ),
    extra=1,
    can_delete=True,
    max_num=metrics.MAX_DEFINITIONS + 50,
    absolute_max=metrics.MAX_DEFINITIONS + 50,
)
