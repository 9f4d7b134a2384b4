"""Forms of the endpoint pages: deploy a job's model, and send an invocation (maybe saving it)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Value
from django.db.models.functions import Lower

from jobs.endpoints.models import (
    MAX_BODY_BYTES,
    MAX_HEADER_CHARS,
    MAX_SAVED_TESTS,
    MAX_TEST_NAME_CHARS,
    SavedTest,
)

CONTENT_TYPES = ["application/json", "text/csv", "application/x-npy", "text/plain"]


def serving_instance_types() -> list[tuple[str, str]]:
    from jobs.api_limits import enum_values

    types = enum_values("ProductionVariantInstanceType")
    default = settings.ANYJOB_DEFAULT_SERVING_INSTANCE_TYPE
    ordered = [default, *[t for t in types if t != default]] if default in types else types
    return [(t, t) for t in ordered]


class DeployForm(forms.Form):
    name = forms.CharField(max_length=63, label="Endpoint name", help_text="Letters, digits and hyphens.")
    inference_entry_point = forms.ChoiceField(label="Inference script", choices=())
    instance_type = forms.ChoiceField(choices=serving_instance_types, label="Instance type")
    instance_count = forms.IntegerField(min_value=1, max_value=100, initial=1, label="Instance count")
    ttl_minutes = forms.IntegerField(
        min_value=1,
        max_value=7 * 24 * 60,
        required=False,
        label="Delete after (minutes)",
        help_text="Optional: endpoints cost money on AWS; it is deleted by itself after this long.",
    )

    def __init__(self, *args: Any, entry_points: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["inference_entry_point"].choices = [(e, e) for e in entry_points]
        self.fields["instance_type"].initial = settings.ANYJOB_DEFAULT_SERVING_INSTANCE_TYPE

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


class InvokeForm(forms.Form):
    """One request to an endpoint; with a test name it is also saved, with its expectation."""

    body = forms.CharField(
        widget=forms.Textarea({"rows": 8, "spellcheck": "false"}), required=False, strip=False
    )
    body_file = forms.FileField(required=False, label="…or a file", allow_empty_file=True)
    content_type = forms.CharField(
        max_length=MAX_HEADER_CHARS, initial="application/json", label="Content type"
    )
    accept = forms.CharField(max_length=MAX_HEADER_CHARS, required=False, label="Accept")
    custom_attributes = forms.CharField(
        max_length=MAX_HEADER_CHARS, required=False, label="Custom attributes"
    )
    save_as = forms.CharField(max_length=MAX_TEST_NAME_CHARS, required=False, label="Save as test named")
    expect = forms.ChoiceField(choices=SavedTest.Expect.choices, initial="status", label="Expect")
    expected_status = forms.IntegerField(min_value=100, max_value=599, initial=200, required=False)
    json_path = forms.CharField(max_length=200, required=False, label="JSON path")
    expected_value = forms.CharField(max_length=10_000, required=False, label="equals")
    tolerance = forms.FloatField(min_value=0, required=False, label="±")
    pattern = forms.CharField(max_length=500, required=False, label="Regex")

    def __init__(self, *args: Any, job: Any = None, user: Any = None, **kwargs: Any) -> None:
        """``job`` and ``user``: whose saved tests a name is checked against, and who saves."""
        super().__init__(*args, **kwargs)
        self.job, self.user = job, user
        #: The user's own test of that name, which saving updates.
        self.existing: SavedTest | None = None
        for name in ("content_type", "accept", "custom_attributes"):
            self.fields[name].error_messages["max_length"] = (
                f"SageMaker refuses headers over {MAX_HEADER_CHARS} characters (this one has %(show_value)d)."
            )
        self.fields["save_as"].error_messages["max_length"] = (
            f"A test name has at most {MAX_TEST_NAME_CHARS} characters (this one has %(show_value)d)."
        )

    def clean_save_as(self) -> str:
        name = self.cleaned_data["save_as"].strip()
        if not name:
            return ""
        if not name.isprintable():
            raise forms.ValidationError("A test name is one line of text, without control characters.")
        if self.job is not None:
            # The database compares in lower case too (the constraint on Lower("name")).
            taken = (
                SavedTest.objects.filter(job=self.job)
                .alias(lower_name=Lower("name"))
                .filter(lower_name=Lower(Value(name)))
                .select_related("owner")
                .first()
            )
            if taken is not None and (self.user is None or taken.owner_id != self.user.pk):
                raise forms.ValidationError(self.name_taken(taken.name, taken.owner.get_username()))
            if taken is None and SavedTest.objects.filter(job=self.job).count() >= MAX_SAVED_TESTS:
                raise forms.ValidationError(
                    f"This model has {MAX_SAVED_TESTS} saved tests, the most it keeps (its suite runs "
                    "them all after each deploy): delete one, or save under the name of one of yours."
                )
            self.existing = taken
        return name

    @staticmethod
    def name_taken(name: str, owner: str = "") -> str:
        by = f", saved by {owner}" if owner else ""
        return (
            f"This model has a test called {name!r} already{by} (names are the same whatever their "
            "case): choose another name. Only who saved a test can change it."
        )

    def save_test(self) -> SavedTest:
        """Save the request as a test of the job: a new one, or the user's own of that name.
        ``IntegrityError`` if another user took the name meanwhile."""
        data = self.cleaned_data
        test = self.existing or SavedTest(job=self.job, owner=self.user)
        test.name = data["save_as"]
        test.body = data["raw_body"]
        test.content_type = data["content_type"]
        test.accept = data.get("accept") or ""
        test.custom_attributes = data.get("custom_attributes") or ""
        test.expect = data["expect"]
        test.expected_status = data.get("expected_status") or 200
        test.json_path = data.get("json_path") or ""
        test.expected_value = data.get("expected_value") or ""
        test.tolerance = data.get("tolerance")
        test.pattern = data.get("pattern") or ""
        test.save()
        return test

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("body_file")
        if upload is not None:
            if upload.size > MAX_BODY_BYTES:
                self.add_error(
                    "body_file",
                    f"The file is {_mib(upload.size)}; SageMaker takes at most 6 MiB "
                    f"({MAX_BODY_BYTES:,} bytes).",
                )
                return data
            raw = upload.read()
        else:
            raw = (data.get("body") or "").encode()
        if not raw:
            self.add_error("body", "The body is empty: type a request or choose a file.")
            return data
        if len(raw) > MAX_BODY_BYTES:
            self.add_error(
                "body",
                f"The body is {_mib(len(raw))}; SageMaker takes at most 6 MiB ({MAX_BODY_BYTES:,} bytes).",
            )
            return data
        kind = (data.get("content_type") or "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                json.loads(raw)
            except ValueError as exc:
                self.add_error(
                    "body", f"The body is not valid JSON ({exc}); fix it or change the content type."
                )
        elif kind in ("text/csv", "text/plain"):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("body", f"A {kind} body must be UTF-8 text.")
            else:
                if kind == "text/csv":
                    try:
                        list(csv.reader(io.StringIO(text)))
                    except csv.Error as exc:
                        self.add_error("body", f"The body is not valid CSV ({exc}).")
        data["raw_body"] = raw
        if data.get("save_as"):
            self._check_expectation(data)
        return data

    def _check_expectation(self, data: dict[str, Any]) -> None:
        from jobs.endpoints.expectations import PathError, parse_path

        expect = data.get("expect")
        if expect == "status" and not data.get("expected_status"):
            self.add_error("expected_status", "Which status code?")
        if expect == "json":
            if not data.get("json_path"):
                self.add_error("json_path", "Which value, e.g. predictions[0]?")
            else:
                try:
                    parse_path(data["json_path"])
                except PathError as exc:
                    self.add_error("json_path", str(exc))
        if expect == "regex":
            import regex

            try:
                regex.compile(data.get("pattern") or "")
            except regex.error as exc:
                self.add_error("pattern", f"Not a valid regular expression: {exc}.")
            if not data.get("pattern"):
                self.add_error("pattern", "Which pattern?")
