"""On PostgreSQL, the history's free-text search reads its indexes (migrations 0007, 0013).

Run by the PostgreSQL pass of ``make test`` (``ANYJOB_TEST_DB=postgres``); skipped on SQLite.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.history import filter_jobs
from jobs.models import SEARCH_TEXT_MAX_BYTES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: the PostgreSQL pass of make test runs it")


def plan(sql: str, params=()) -> str:
    with connection.cursor() as cursor:
        # A handful of rows would be read whole whatever the indexes: ask for the indexed plan.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params or None)
        return "\n".join(row[0] for row in cursor.fetchall())


def queryset_plan(queryset) -> str:
    return plan(*queryset.query.sql_with_params())


@pytest.fixture
def loaded():
    """Rows committed as autovacuum finds them: flushed (the test server commits asynchronously,
    and a row whose commit is not yet on disk is not all-visible), then vacuumed and analysed."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
    yield _vacuum
    with connection.cursor() as cursor:
        cursor.execute("RESET synchronous_commit")


def _vacuum() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE jobs_trainingjob")


@pytest.mark.django_db(transaction=True)
def test_the_search_reads_the_trigram_index_and_the_cut_texts_index(alice, loaded) -> None:
    from jobs.models import TrainingJob

    # One job whose text is cut (its hyperparameters are long) and whose match is in the part cut.
    long_value = "x" * SEARCH_TEXT_MAX_BYTES
    cut = TrainingJob.objects.create(
        owner=alice,
        name="cut-one",
        entry_point="t.py",
        hyperparameters=[
            {"key": "pad", "value": long_value, "type": "string"},
            {"key": "d", "value": "ImageNet"},
        ],
    )
    assert "imagenet" not in cut.search_text
    TrainingJob.objects.create(owner=alice, name="plain-imagenet", entry_point="t.py")
    TrainingJob.objects.bulk_create(  # enough others for the planner's statistics to matter
        TrainingJob(owner=alice, name=f"other-{i}", entry_point="t.py", search_text=f"other-{i} squad")
        for i in range(3000)
    )
    loaded()
    with CaptureQueriesContext(connection) as captured:
        jobs = filter_jobs({"q": "ImageNet"})
    # The cut texts matching in their JSON are listed first, in the partial index of cut texts.
    (listing,) = captured.captured_queries
    assert "Index Scan using jobs_search_text_cut_idx" in plan(listing["sql"]), listing["sql"]
    # The match itself (as the page's COUNT reads it): the trigram index, and the cut job by key.
    counted = queryset_plan(jobs.order_by().values("pk"))
    assert "Bitmap Index Scan on jobs_search_text_trgm_idx" in counted, counted
    assert "SubPlan" not in counted and "hyperparameters" not in counted, counted
    assert sorted(j.name for j in jobs) == ["cut-one", "plain-imagenet"]


@pytest.mark.django_db(transaction=True)
def test_a_search_sorted_by_name_reads_a_page_s_ids_in_the_index_alone(client, alice, loaded) -> None:
    """The jobs a search matches all sort after the others (a team's ``resnet-imagenet-…``):
    the page's ids come from an index-only scan, not from every row before the first match."""
    from jobs.models import TrainingJob

    TrainingJob.objects.bulk_create(
        TrainingJob(
            owner=alice,
            name=f"{'z-resnet' if i % 10 == 0 else 'a-bert'}-{i:05d}",
            entry_point="t.py",
            search_text=f"{'z-resnet imagenet' if i % 10 == 0 else 'a-bert squad'}-{i:05d}",
        )
        for i in range(3000)
    )
    loaded()
    client.force_login(alice)
    for sort in ("name", "-name", "-created"):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/jobs/?q=imagenet&sort={sort}&page=2")
        assert response.status_code == 200
        names = [j.name for j in response.context["page"]]
        assert len(names) == 50 and all(n.startswith("z-resnet") for n in names)
        if sort != "-created":
            assert names == sorted(names, reverse=sort.startswith("-"))
        (ids,) = [q["sql"] for q in captured.captured_queries if _selects_ids_only(q["sql"])]
        shown = plan(ids)
        assert "Index Only Scan" in shown, (sort, shown)


def _selects_ids_only(sql: str) -> bool:
    """A page's ids (``jobs.history._page_by_keys``): the ids alone, in the page's order."""
    return sql.startswith('SELECT "jobs_trainingjob"."id" AS "pk" FROM') and " ORDER BY " in sql


def test_more_cut_texts_matching_than_are_listed_are_still_all_found(alice, monkeypatch) -> None:
    """A teammate can make many jobs whose text is cut (long hyperparameters): past
    ``MAX_CUT_IDS`` of them the search reads them by a subquery instead of a list, and finds
    every one, the plain matches too."""
    from jobs import history
    from jobs.models import TrainingJob

    monkeypatch.setattr(history, "MAX_CUT_IDS", 2)
    long_value = "x" * SEARCH_TEXT_MAX_BYTES
    for i in range(3):
        TrainingJob.objects.create(
            owner=alice,
            name=f"cut-{i}",
            entry_point="t.py",
            hyperparameters=[{"key": "pad", "value": long_value}, {"key": "d", "value": "ImageNet"}],
        )
    TrainingJob.objects.create(owner=alice, name="plain-imagenet", entry_point="t.py")
    TrainingJob.objects.create(owner=alice, name="other", entry_point="t.py")
    with CaptureQueriesContext(connection) as captured:
        found = sorted(j.name for j in filter_jobs({"q": "imagenet"}))
    assert found == ["cut-0", "cut-1", "cut-2", "plain-imagenet"]
    assert any("IN (SELECT" in q["sql"] for q in captured.captured_queries)
