"""Secret environment variables of endpoints; saved test names unique per job regardless of
case. Tests whose names already differ only in case are renamed first ("smoke (2)"), so the
new constraint can be created."""

import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models

NAME_CHARS = 100


def rename_names_that_differ_only_in_case(apps, schema_editor):
    tests = apps.get_model("endpoints", "SavedTest").objects.using(schema_editor.connection.alias)
    rows = list(tests.order_by("job_id", "created_at", "pk").values_list("pk", "job_id", "name"))
    every: dict[int, set[str]] = {}  # each job's names in lower case, to pick free new ones
    for _, job, name in rows:
        every.setdefault(job, set()).add(name.lower())
    kept: dict[int, set[str]] = {}
    for pk, job, name in rows:
        seen = kept.setdefault(job, set())
        if name.lower() not in seen:  # the oldest keeps its name
            seen.add(name.lower())
            continue
        n = 2
        while True:
            suffix = f" ({n})"
            candidate = name[: NAME_CHARS - len(suffix)] + suffix
            if candidate.lower() not in every[job] and candidate.lower() not in seen:
                break
            n += 1
        every[job].add(candidate.lower())
        seen.add(candidate.lower())
        tests.filter(pk=pk).update(name=candidate)


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0001_initial"),
        ("jobs", "0006_secret_environment"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="secret_environment",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(rename_names_that_differ_only_in_case, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="savedtest",
            name="saved_test_name_per_job",
        ),
        migrations.AddConstraint(
            model_name="savedtest",
            constraint=models.UniqueConstraint(
                models.F("job"),
                django.db.models.functions.text.Lower("name"),
                name="saved_test_name_per_job_any_case",
            ),
        ),
    ]
