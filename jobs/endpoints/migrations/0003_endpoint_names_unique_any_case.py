"""Endpoint names unique regardless of case, as SageMaker's are (issue #11).

Rows whose names already differ only in case are dealt with first: the oldest keeps its name;
each later one is renamed ``<name>-dup<id>`` and, unless it is final, ends DeployFailed saying
why (the backend's endpoint is the oldest's: deleting the twin must not delete it)."""

from django.db import migrations, models
from django.db.models.functions import Lower

NAME_CHARS = 63
FINAL = ("Failed", "DeployFailed", "Deleted")


def free_name(name: str, pk: int, taken: set[str]) -> str:
    n = 0
    while True:
        suffix = f"-dup{pk}" + (f"-{n}" if n else "")
        candidate = name[: NAME_CHARS - len(suffix)].rstrip("-") + suffix
        if candidate.lower() not in taken:
            return candidate
        n += 1


def rename_names_that_differ_only_in_case(apps, schema_editor):
    endpoints = apps.get_model("endpoints", "Endpoint").objects.using(schema_editor.connection.alias)
    rows = list(endpoints.order_by("created_at", "pk").values_list("pk", "name", "status"))
    taken = {name.lower() for _, name, _ in rows}
    kept: dict[str, str] = {}
    for pk, name, status in rows:
        first = kept.setdefault(name.lower(), name)
        if first is name:
            continue
        new = free_name(name, pk, taken)
        taken.add(new.lower())
        fields = {"name": new}
        if status not in FINAL:
            fields.update(
                status="DeployFailed",
                error=(
                    f"Renamed from {name!r}: endpoint names are unique regardless of case, and "
                    f"{first!r} is another endpoint; this one was never deployed on its own."
                ),
            )
        endpoints.filter(pk=pk).update(**fields)


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0002_secret_environment_and_test_names_any_case"),
    ]

    operations = [
        migrations.RunPython(rename_names_that_differ_only_in_case, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="endpoint",
            constraint=models.UniqueConstraint(Lower("name"), name="endpoints_endpoint_name_any_case"),
        ),
    ]
