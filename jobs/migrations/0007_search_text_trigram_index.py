"""On PostgreSQL, the history's free-text search (``search_text LIKE '%…%'``, jobs.history._search)
reads a trigram index (``pg_trgm``, GIN): a rare term finds its few rows without reading the
table. The texts that were cut (they start with ``SEARCH_TEXT_CUT``: rare) have a partial index
of their own, so the other side of the search's OR is an index read too. SQLite has neither;
there the search is checked inside the history's B-tree indexes that hold ``search_text``
(0002), which is fast enough at 100,000 jobs.

``pg_trgm`` is a trusted extension (PostgreSQL 13+): the database's owner may create it.
"""

from django.db import migrations

from jobs.models import SEARCH_TEXT_CUT

INDEX = "jobs_search_text_trgm_idx"
CUT_INDEX = "jobs_search_text_cut_idx"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON jobs_trainingjob USING gin (search_text gin_trgm_ops)"
    )
    # The same condition as the search's ``search_text__startswith=SEARCH_TEXT_CUT`` (\x1e).
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {CUT_INDEX} ON jobs_trainingjob (id) WHERE search_text LIKE %s",
        [SEARCH_TEXT_CUT + "%"],
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")
        schema_editor.execute(f"DROP INDEX IF EXISTS {CUT_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0006_secret_environment"),
    ]

    operations = [
        migrations.RunPython(create, drop),
    ]
