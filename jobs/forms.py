"""Forms that validate what the job pages receive (GET filters included)."""

from __future__ import annotations

from typing import Any

from django import forms

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


class HistoryFilterForm(forms.Form):
    """The history page's filters; ``cleaned_data`` holds typed values (blank means "any")."""

    status = forms.ChoiceField(choices=[("", "Any status"), *TrainingJob.Status.choices], required=False)
    owner = forms.CharField(max_length=150, required=False, label="Owner (username)")
    created_from = forms.DateField(
        required=False, label="Created from", widget=forms.DateInput({"type": "date"})
    )
    created_to = forms.DateField(required=False, label="Created to", widget=forms.DateInput({"type": "date"}))
    q = forms.CharField(max_length=200, required=False, label="Search")
    sort = forms.ChoiceField(choices=[(s, s) for s in SORTS], required=False)

    def clean_owner(self) -> str:
        return self.cleaned_data["owner"].strip()

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip()

    def clean_sort(self) -> str:
        return self.cleaned_data["sort"] or DEFAULT_SORT

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        return data
