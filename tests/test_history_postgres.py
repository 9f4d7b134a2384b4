"""On PostgreSQL, the history's free-text search reads its indexes (migration 0007).

Run by the PostgreSQL pass of ``make test`` (``ANYJOB_TEST_DB=postgres``); skipped on SQLite.
"""

from __future__ import annotations

import pytest
from django.db import connection

from jobs.history import filter_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: the PostgreSQL pass of make test runs it")


def plan(queryset) -> str:
    with connection.cursor() as cursor:
        # A handful of rows would be read whole whatever the indexes: ask for the indexed plan.
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = queryset.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_search_reads_the_trigram_index_and_the_cut_texts_index() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs_trainingjob'")
        names = {row[0] for row in cursor.fetchall()}
    assert {"jobs_search_text_trgm_idx", "jobs_search_text_cut_idx"} <= names
    # The match itself (as the page's COUNT reads it): the page's order may walk another index.
    shown = plan(filter_jobs({"q": "ImageNet"}).order_by().values("pk"))
    assert "Bitmap Index Scan on jobs_search_text_trgm_idx" in shown, shown
    assert "Bitmap Index Scan on jobs_search_text_cut_idx" in shown, shown
    assert "SubPlan" not in shown, shown  # the JSON is read for the cut rows only
