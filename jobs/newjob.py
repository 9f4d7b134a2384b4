"""The new-job page: its form, row tables and uploaded code checked together, then the job.

The API's limits are checked on the request itself — the one ``build_training_request``
makes — with ``jobs.api_limits`` and the backend's ``preflight``, the same rules the local
backend enforces; each problem is shown next to the field it came from.

Uploaded code is bundled and stored as soon as it arrives (content-addressed), and the form
carries its sha256 from then on, so a form sent back with errors loses nothing.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shlex
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django import forms
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import QueryDict
from django.utils import timezone

from anyjob_container.environment import decode_value, is_reserved, to_cmd_args
from jobs import api_limits, bundles, metrics, storage, uploads
from jobs.backends import get_backend
from jobs.forms import (
    ChannelFormSet,
    EnvironmentFormSet,
    HyperparameterFormSet,
    MetricDefinitionFormSet,
    NewJobForm,
    RowFormSet,
    TagFormSet,
    environment_of,
)
from jobs.models import TrainingJob
from jobs.redact import secrets_of
from jobs.requests import (
    CODE_CHANNEL,
    RESERVED_TAGS,
    build_training_request,
    encode_hyperparameter,
    reserved_hyperparameters,
    settings_kwargs,
)

log = logging.getLogger(__name__)

#: Size cap when a stored bundle is read back for the file list or a source view.
MAX_BUNDLE_READ = 256 * 1024**2


def upload_limits() -> uploads.Limits:
    return uploads.Limits(
        max_upload_bytes=settings.ANYJOB_MAX_UPLOAD_BYTES,
        max_code_bytes=settings.ANYJOB_MAX_CODE_BYTES,
        max_files=settings.ANYJOB_MAX_CODE_FILES,
    )


def store_uri() -> str:
    return settings.ANYJOB_ARTIFACT_STORE


def default_output_path() -> str:
    return f"{settings.ANYJOB_ARTIFACT_STORE.rstrip('/')}/output"


def generate_name(entry_point: str = "") -> str:
    """``<entry point stem>-<UTC time>-<4 hex>``: readable, sortable, valid, unique in practice."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", entry_point.rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("-")
    stem = (stem or "job")[:30].strip("-") or "job"
    return f"{stem}-{timezone.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def name_taken(name: str) -> str | None:
    """Why ``name`` cannot be used, or None: SageMaker's names are unique regardless of case, so
    ``LONG-RUN`` is taken by someone's ``long-run``."""
    existing = TrainingJob.objects.filter(name__iexact=name).values_list("name", flat=True).first()
    if existing is None:
        return None
    if existing == name:
        return f"A job called {name!r} exists already: choose another name."
    return (
        f"A job called {existing!r} exists already, and job names are unique regardless of case: "
        "choose another name."
    )


def job_code_uri(name: str) -> str:
    """Where the worker puts the job's own copy of its code bundle (``tasks._stage_code``)."""
    return bundles.job_uri(name, store_uri())


# --- code ------------------------------------------------------------------------------------


@dataclass
class Code:
    """A stored bundle: its sha256, file names and sizes, and the entry points it offers."""

    sha256: str
    files: dict[str, bytes]
    candidates: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return bundles.uri_for(self.sha256, store_uri())

    @property
    def listing(self) -> list[tuple[str, int]]:
        return sorted((name, len(body)) for name, body in self.files.items())

    @property
    def total_bytes(self) -> int:
        return sum(len(body) for body in self.files.values())

    def source(self, name: str) -> str | None:
        return uploads.text_preview(self.files, name) if name in self.files else None


def code_from_files(files: dict[str, bytes]) -> Code:
    """Bundle and store ``files`` (nothing is stored twice); ``uploads.UploadError`` if unusable."""
    try:
        bundle = bundles.build(files)
    except bundles.BundleError as exc:
        raise uploads.UploadError(str(exc)) from None
    bundles.store(bundle, store_uri())
    code = Code(bundle.sha256, files, uploads.entry_points(files))
    if not code.candidates:
        raise uploads.UploadError(
            "The code has no file that can be run: upload a .py or .sh file to use as the entry point."
        )
    return code


def load_code(sha256: str) -> Code | None:
    """The stored bundle ``sha256``, or None when there is none."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        return None
    try:
        files = bundles.load(sha256, store_uri(), max_bytes=MAX_BUNDLE_READ)
    except storage.NotFound:
        return None
    except (storage.StorageError, OSError, EOFError, ValueError) as exc:
        log.warning("code bundle %s cannot be read: %s", sha256, exc)
        return None
    return Code(sha256, files, uploads.entry_points(files))


# --- the form ----------------------------------------------------------------------------------

#: Request paths → (part of the page, field).
_FIELDS = {
    "TrainingJobName": "name",
    "ResourceConfig.InstanceType": "instance_type",
    "ResourceConfig.InstanceCount": "instance_count",
    "ResourceConfig.VolumeSizeInGB": "volume_size_gb",
    "StoppingCondition.MaxRuntimeInSeconds": "max_runtime_seconds",
    "OutputDataConfig.S3OutputPath": "output_path",
    "EnableNetworkIsolation": "network_isolation",
}
_CHANNEL_FIELDS = {
    "ChannelName": "name",
    "DataSource.S3DataSource.S3Uri": "uri",
    "ContentType": "content_type",
    "InputMode": "input_mode",
}


class NewJob:
    """The whole new-job page: ``form`` and four row tables, checked with the code together."""

    def __init__(
        self,
        data: QueryDict | None = None,
        files: Any = None,
        *,
        initial: dict[str, Any] | None = None,
        rows: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        rows = rows or {}
        if data is not None:
            data = data.copy()  # mutable: the stored code's sha256 is written back into it
            # A page from before the metric table (a tab left open across an upgrade): no rows.
            if "md-TOTAL_FORMS" not in data:
                data.update({"md-TOTAL_FORMS": "0", "md-INITIAL_FORMS": "0"})
        self.data = data
        self.form = NewJobForm(data, files, initial=initial)
        self.channels = ChannelFormSet(data, prefix="ch", initial=rows.get("channels"))
        self.hyperparameters = HyperparameterFormSet(data, prefix="hp", initial=rows.get("hyperparameters"))
        self.environment = EnvironmentFormSet(data, prefix="env", initial=rows.get("environment"))
        self.tags = TagFormSet(data, prefix="tag", initial=rows.get("tags"))
        self.metrics = MetricDefinitionFormSet(data, prefix="md", initial=rows.get("metric_definitions"))
        self.code: Code | None = None
        self.job: TrainingJob | None = None
        if data is None and initial and initial.get("source_sha256"):
            self.code = load_code(initial["source_sha256"])

    @property
    def tables(self) -> list[RowFormSet]:
        return [self.channels, self.hyperparameters, self.environment, self.tags, self.metrics]

    @property
    def entry_point(self) -> str:
        if self.data is not None:
            return (self.data.get("entry_point") or "").strip()
        return (self.form.initial or {}).get("entry_point", "")

    def source_preview(self) -> str | None:
        return self.code.source(self.entry_point) if self.code and self.entry_point else None

    # -- checking --------------------------------------------------------------------------
    def is_valid(self, user: Any) -> bool:
        """Check everything; the page shows each problem next to its field."""
        checked = [self.form.is_valid(), *[t.is_valid() for t in self.tables]]
        self._check_code()
        self._check_hyperparameters()
        self._check_metrics()
        if all(checked):
            self._check_parent(user)
            # The API's rules too, on the rows that passed their own checks: every message at once.
            if self.code is not None and not self.form.errors:
                self._check_request()
        return not self.has_errors()

    def has_errors(self) -> bool:
        return bool(self.form.errors) or any(t.total_error_count() for t in self.tables)

    def _set(self, name: str, value: str) -> None:
        assert self.data is not None
        self.data[name] = value
        if hasattr(self.form, "cleaned_data"):
            self.form.cleaned_data[name] = value

    def _check_code(self) -> None:
        uploaded = self.form.files.getlist("code") if self.form.files else []
        uploaded = [u for u in uploaded if u]
        if uploaded:
            try:
                self.code = code_from_files(uploads.read_uploads(uploaded, upload_limits()))
            except uploads.UploadError as exc:
                self.form.add_error("code", str(exc))
            except storage.StorageError as exc:
                log.exception("storing uploaded code failed")
                self.form.add_error("code", f"The code could not be stored: {exc}. Try again.")
        elif self.data is not None and self.data.get("source_sha256"):
            self.code = load_code(self.data["source_sha256"])
            if self.code is None:
                self.form.add_error("code", "The code uploaded earlier is gone: upload it again.")
        else:
            self.form.add_error(
                "code", "Choose the code to upload: a .py file, several files, or a .zip/.tar.gz."
            )
        if self.code is None:
            self._set("source_sha256", "")
            return
        self._set("source_sha256", self.code.sha256)
        entry = self.entry_point
        if not entry:
            entry = uploads.default_entry_point(self.code.candidates)
            if entry:
                self._set("entry_point", entry)
        if not entry:
            self.form.add_error("entry_point", "Pick the file to run.")
        elif entry not in self.code.candidates:
            self.form.add_error(
                "entry_point",
                f"{entry!r} is not a runnable file of the uploaded code: pick one of "
                f"{', '.join(self.code.candidates[:10])}.",
            )

    def _check_hyperparameters(self) -> None:
        if not self.hyperparameters.is_valid():
            return
        for i, row in self.hyperparameters.rows():
            form = self.hyperparameters.forms[i]
            if is_reserved(row["key"]):
                form.add_error(
                    "key", f"{row['key']!r} is reserved: anyjob sets the sagemaker_* hyperparameters itself."
                )
                continue
            try:
                encode_hyperparameter(row["value"], row["type"])
            except ValueError as exc:
                form.add_error("value", f"{exc}.")

    def _check_metrics(self) -> None:
        """Each metric definition as ``jobs.metrics`` reads it (compiles in Python, fits AWS's
        dialect, captures a number): errors on their row; warnings are the tester's to show."""
        if not self.metrics.is_valid():
            return
        kept = self.metrics.rows()
        for problem in metrics.check_definitions([r for _, r in kept]):
            if problem.level != "error":
                continue
            if problem.index is None:
                self.metrics._non_form_errors = self.metrics.error_class(
                    [*self.metrics.non_form_errors(), problem.message], error_class="nonform"
                )
                continue
            form = self.metrics.forms[kept[problem.index][0]]
            if problem.field == "name" and "name" in form.errors:
                continue  # the table's own check said it already (a name used twice)
            form.add_error(problem.field, problem.message)

    def _check_parent(self, user: Any) -> None:
        name = self.form.cleaned_data.get("parent")
        if not name:
            return
        parent = TrainingJob.objects.filter(name=name).first()
        if parent is None:
            self.form.add_error(None, f"The job {name!r} this was cloned from does not exist any more.")
        elif not (user.is_staff or parent.owner_id == user.pk):
            self.form.add_error(None, "Only the owner of a job (or staff) can clone it.")

    def draft(self) -> SimpleNamespace:
        """The job as typed, in ``TrainingJob``'s field shapes (after the checks passed)."""
        data = self.form.cleaned_data
        environment, secret_environment = environment_of(self.environment)
        return SimpleNamespace(
            name=data["name"],
            entry_point=data.get("entry_point") or self.entry_point,
            hyperparameters=[
                {"key": r["key"], "value": r["value"], "type": r["type"]}
                for _, r in self.hyperparameters.rows()
            ],
            channels=[
                {
                    "name": r["name"].strip(),
                    "uri": r["uri"].strip(),
                    "content_type": r["content_type"].strip(),
                    "input_mode": r["input_mode"],
                }
                for _, r in self.channels.rows()
            ],
            instance_type=data["instance_type"],
            instance_count=data["instance_count"],
            volume_size_gb=data["volume_size_gb"],
            max_runtime_seconds=data["max_runtime_seconds"],
            output_path=data["output_path"],
            environment=environment,
            secret_environment=secret_environment,
            tags=[{"key": r["key"], "value": r["value"]} for _, r in self.tags.rows()],
            metric_definitions=self.metrics.definitions(),
            network_isolation=data["network_isolation"],
        )

    def _check_request(self) -> None:
        if self.code is None:
            return
        draft = self.draft()
        if taken := name_taken(draft.name):
            self.form.add_error("name", taken)
        if not self._check_reserved_rows(draft):
            return
        # The request the worker will send (job_id: the row's tag counts against the limits).
        request = build_training_request(
            draft, code_uri=job_code_uri(draft.name), job_id=0, **settings_kwargs(settings)
        )
        backend = get_backend()
        problems = [
            (p.path, p.message, api_limits.entry_field(p))
            for p in api_limits.validate(
                "CreateTrainingJob", backend.api_shaped("CreateTrainingJob", request)
            )
        ]
        problems += [(path, message, "value") for path, message in backend.preflight(request)]
        rows = {
            "channels": [i for i, _ in self.channels.rows()],
            "tags": [i for i, _ in self.tags.rows()],
            "hp": {r["key"]: i for i, r in self.hyperparameters.rows()},
            "env": {r["key"]: i for i, r in self.environment.rows()},
            "md": [i for i, _ in self.metrics.rows()],
        }
        hidden = secrets_of(draft)  # a message quoting a value never quotes a secret one
        for path, message, entry_field in problems:
            self._place(path, hidden.redact(message), rows, entry_field)

    def _check_reserved_rows(self, draft: SimpleNamespace) -> bool:
        """Tags and channels anyjob adds itself cannot be typed in; whether none was."""
        clean = True
        for index, (i, row) in enumerate(self.tags.rows()):
            if draft.tags[index]["key"] in RESERVED_TAGS:
                self.tags.forms[i].add_error(
                    "key", f"{row['key']!r} is reserved: anyjob sets this tag itself."
                )
                clean = False
        if draft.network_isolation:
            for index, (i, _) in enumerate(self.channels.rows()):
                if draft.channels[index]["name"] == CODE_CHANNEL:
                    self.channels.forms[i].add_error(
                        "name",
                        f"With network isolation the channel {CODE_CHANNEL!r} carries the job's code: "
                        "name this one differently.",
                    )
                    clean = False
        return clean

    def _place(self, path: str, message: str, rows: dict[str, Any], entry_field: str = "value") -> None:
        """Put one problem next to the field it is about."""
        if path in _FIELDS:
            self.form.add_error(_FIELDS[path], message)
            return
        if m := re.fullmatch(r"InputDataConfig\[(\d+)\](?:\.(.+))?", path):
            index, rest = int(m[1]), m[2] or ""
            form = self.channels.forms[rows["channels"][index]]
            form.add_error(_CHANNEL_FIELDS.get(rest), message)
            return
        if m := re.fullmatch(r"AlgorithmSpecification\.MetricDefinitions\[(\d+)\](?:\.(Name|Regex))?", path):
            form = self.metrics.forms[rows["md"][int(m[1])]]
            form.add_error({"Name": "name", "Regex": "regex"}.get(m[2] or ""), message)
            return
        if m := re.fullmatch(r"Tags\[(\d+)\](?:\.(Key|Value))?", path):
            form = self.tags.forms[rows["tags"][int(m[1])]]
            form.add_error({"Key": "key", "Value": "value"}.get(m[2] or ""), message)
            return
        for prefix, table, key in (
            ("HyperParameters", self.hyperparameters, "hp"),
            ("Environment", self.environment, "env"),
        ):
            if path.startswith(prefix + "."):
                index = rows[key].get(path[len(prefix) + 1 :])
                if index is not None:
                    table.forms[index].add_error(entry_field, message)
                    return
        tables = {
            "InputDataConfig": self.channels,
            "HyperParameters": self.hyperparameters,
            "Environment": self.environment,
            "Tags": self.tags,
            "AlgorithmSpecification.MetricDefinitions": self.metrics,
        }
        if path in tables:
            table = tables[path]
            table._non_form_errors = table.error_class(
                [*table.non_form_errors(), message], error_class="nonform"
            )
            return
        # Settings, not the form: RoleArn, TrainingImage. Say so plainly.
        self.form.add_error(None, f"anyjob's configuration is refused ({path}): {message}")

    # -- the job ------------------------------------------------------------------------------
    def save(self, owner: Any) -> TrainingJob:
        """Create the job (Pending) and send it to a worker once committed."""
        from jobs.tasks import enqueue_submit

        assert self.code is not None
        draft = self.draft()
        parent = None
        if self.form.cleaned_data.get("parent"):
            parent = TrainingJob.objects.filter(name=self.form.cleaned_data["parent"]).first()
        try:
            with transaction.atomic():
                job = TrainingJob.objects.create(
                    owner=owner,
                    parent=parent,
                    source_sha256=self.code.sha256,
                    source_uri=self.code.uri,
                    **vars(draft),
                )
                enqueue_submit(job)
        except IntegrityError:
            self.form.add_error(
                "name", name_taken(draft.name) or f"A job called {draft.name!r} exists already."
            )
            raise forms.ValidationError("duplicate name") from None
        self.job = job
        return job


# --- the live preview ----------------------------------------------------------------------------


def preview(data: QueryDict) -> dict[str, Any]:
    """What the job will receive, from the form as typed so far (rows that do not check out are
    listed as problems instead): the ``HyperParameters`` map and the script's command line."""
    table = HyperparameterFormSet(data, prefix="hp")
    problems: list[str] = []
    encoded: dict[str, str] = {}
    decoded: dict[str, Any] = {}
    if not table.management_form.is_valid():
        incomplete = "The form is incomplete: reload the page."
        return {"hyperparameters": "{}", "command": "", "problems": [incomplete]}
    for form in table.forms:
        form.is_valid()
        key = (form.data.get(form.add_prefix("key")) or "").strip()
        if not key or form.data.get(form.add_prefix("DELETE")):
            continue
        value = form.data.get(form.add_prefix("value"), "")
        kind = form.data.get(form.add_prefix("type"), "string")
        if is_reserved(key):
            problems.append(f"{key}: reserved, anyjob sets it")
            continue
        if key in encoded:
            problems.append(f"{key}: given twice")
            continue
        try:
            encoded[key] = encode_hyperparameter(value, kind)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            continue
        decoded[key] = decode_value(encoded[key])
    entry = (data.get("entry_point") or "").strip() or "<entry point>"
    name = (data.get("name") or "").strip() or "<job name>"
    # The worker's map, from the same function: the job's own copy of the code (or, isolated,
    # the code channel's path), not the upload's content-addressed one.
    reserved = reserved_hyperparameters(
        entry_point=entry,
        job_name=name,
        code_uri=job_code_uri(name),
        region=settings.ANYJOB_REGION,
        network_isolation=_checked(data.get("network_isolation")),
    )
    return {
        "hyperparameters": json.dumps({**encoded, **reserved}, indent=2),
        "command": command_line(entry, to_cmd_args(decoded), has_setup_py=bool(data.get("has_setup_py"))),
        "problems": problems,
    }


def _checked(value: str | None) -> bool:
    """A checkbox's value as ``forms.BooleanField`` reads it."""
    return forms.BooleanField(required=False).to_python(value)


def command_line(entry: str, args: list[str], *, has_setup_py: bool = False) -> str:
    """The command the container runs, as ``anyjob_container.train.script_command`` builds it."""
    if entry.endswith(".sh") or not entry.endswith(".py"):
        return shlex.join(["/bin/sh", "-c", shlex.join([f"./{entry}", *args])])
    if has_setup_py:
        return shlex.join(["python", "-m", entry[:-3].replace("/", "."), *args])
    return shlex.join(["python", entry, *args])
