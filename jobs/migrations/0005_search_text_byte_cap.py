"""``search_text`` was cut at 600 characters (0002); it now keeps up to 2,000 bytes and marks a
cut text, which the search then also looks for in the JSON fields: refill the texts that were
long enough to have been cut."""

from django.db import migrations
from django.db.models.functions import Length

from jobs.models import searchable_text


def refill_long_search_text(apps, schema_editor):
    jobs = apps.get_model("jobs", "TrainingJob").objects.using(schema_editor.connection.alias)
    long = jobs.alias(search_length=Length("search_text")).filter(search_length__gte=600)
    last = 0
    while batch := list(
        long.filter(pk__gt=last).order_by("pk").only("name", "hyperparameters", "channels")[:1000]
    ):
        for job in batch:
            job.search_text = searchable_text(job.name, job.hyperparameters, job.channels)
        jobs.bulk_update(batch, ["search_text"])
        last = batch[-1].pk


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_history_name_search_index"),
    ]

    operations = [
        migrations.RunPython(refill_long_search_text, migrations.RunPython.noop),
    ]
