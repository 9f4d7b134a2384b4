"""Job names unique regardless of case, as SageMaker's are (issue #11).

Rows whose names already differ only in case are dealt with first: the oldest keeps its name;
each later one never had a job of its own on the backend (the backend has one job for both
names, the oldest's), so it is renamed ``<name>-dup<id>`` and, unless it is final, ends
SubmitFailed saying why. Nothing is deleted."""

from django.db import migrations, models
from django.db.models.functions import Lower

NAME_CHARS = 63
FINAL = ("Completed", "Failed", "Stopped")


def free_name(name: str, pk: int, taken: set[str]) -> str:
    n = 0
    while True:
        suffix = f"-dup{pk}" + (f"-{n}" if n else "")
        candidate = name[: NAME_CHARS - len(suffix)].rstrip("-") + suffix
        if candidate.lower() not in taken:
            return candidate
        n += 1


def rename_names_that_differ_only_in_case(apps, schema_editor):
    jobs = apps.get_model("jobs", "TrainingJob").objects.using(schema_editor.connection.alias)
    rows = list(jobs.order_by("created_at", "pk").values_list("pk", "name", "status", "search_text"))
    taken = {name.lower() for _, name, _, _ in rows}
    kept: dict[str, str] = {}
    for pk, name, status, search_text in rows:
        first = kept.setdefault(name.lower(), name)
        if first is name:
            continue
        new = free_name(name, pk, taken)
        taken.add(new.lower())
        fields = {"name": new, "search_text": search_text.replace(name.lower(), new.lower(), 1)}
        note = (
            f"Renamed from {name!r}: job names are unique regardless of case, and {first!r} is "
            "another job's; this one was never submitted on its own."
        )
        if status not in FINAL:
            fields.update(status="SubmitFailed", error=note)
        jobs.filter(pk=pk).update(**fields)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0008_artifact_manifests_and_stop_requests"),
    ]

    operations = [
        migrations.RunPython(rename_names_that_differ_only_in_case, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="trainingjob",
            constraint=models.UniqueConstraint(Lower("name"), name="jobs_trainingjob_name_any_case"),
        ),
    ]
