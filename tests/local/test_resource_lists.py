"""The local backend's ``ListModels``, ``ListEndpointConfigs``, ``ListEndpoints`` and
``ListTrainingJobs`` (one filter, sort and page logic for all four), and ``AddTags`` /
``DeleteTags``, called on the backend itself.

Models and endpoint configs are made with the backend's own calls; endpoints and training jobs
are written as rows (what the list calls read), since making them starts processes that have
nothing to do with listing. Creation times are then set apart so every order is known.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from django.db import connection

from jobs.backends.local.backend import MAX_TAGS, LocalBackend
from jobs.backends.local.models import LocalEndpoint, LocalEndpointConfig, LocalModel, LocalTrainingJob
from jobs.backends.local.shapes import arn_for, list_token
from tests.local.jobs import unique

pytestmark = pytest.mark.django_db

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend()


def refusal(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def make_model(backend: LocalBackend, name: str, tags: list[dict[str, str]] | None = None) -> str:
    request: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": "anyjob/generic:latest"},
    }
    if tags:
        request["Tags"] = tags
    return backend.create_model(request)["ModelArn"]


def make_config(backend: LocalBackend, name: str) -> str:
    make_model(backend, name)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large"}
    variant["InitialInstanceCount"] = 1
    return backend.create_endpoint_config({"EndpointConfigName": name, "ProductionVariants": [variant]})[
        "EndpointConfigArn"
    ]


def make_endpoint(name: str, status: str, created: datetime, modified: datetime) -> str:
    arn = arn_for("endpoint", name)
    request = {"EndpointName": name, "EndpointConfigName": name}
    LocalEndpoint.objects.create(
        name=name,
        key=name.lower(),
        arn=arn,
        uid=name,
        request=request,
        config={"ProductionVariants": [{"ModelName": name}]},
        model={},
        status=status,
        creation_time=created,
        last_modified_time=modified,
    )
    return arn


def make_job(name: str, status: str, created: datetime, ended: datetime | None = None) -> None:
    LocalTrainingJob.objects.create(
        name=name,
        key=name.lower(),
        arn=arn_for("training-job", name),
        request={"TrainingJobName": name},
        status=status,
        secondary_status=status,
        creation_time=created,
        last_modified_time=ended or created,
        training_end_time=ended,
    )


def every_page(list_call: Any, member: str, name_member: str, **params: Any) -> list[list[str]]:
    """The names on each page, following ``NextToken`` to the end."""
    pages, token = [], None
    while True:
        page = list_call(**params, **({"NextToken": token} if token else {}))
        pages.append([s[name_member] for s in page[member]])
        token = page.get("NextToken")
        if not token:
            return pages


#: list method, its summaries' member, the name member, the table, how one is made.
KINDS = {
    "models": ("list_models", "Models", "ModelName", "ModelArn", LocalModel, make_model),
    "endpoint-configs": (
        "list_endpoint_configs",
        "EndpointConfigs",
        "EndpointConfigName",
        "EndpointConfigArn",
        LocalEndpointConfig,
        make_config,
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_models_and_configs_are_filtered_sorted_and_paged(backend, kind) -> None:
    method, member, name_member, arn_member, table, make = KINDS[kind]
    prefix = unique("lst")
    names = [f"{prefix}-b", f"{prefix}-a", f"{prefix}-c"]  # made in this order, an hour apart
    arns = {name: make(backend, name) for name in names}
    for i, name in enumerate(names):
        table.objects.filter(key=name).update(creation_time=T0 + i * HOUR)
    listing = getattr(backend, method)

    newest_first = listing(NameContains=prefix)
    assert [s[name_member] for s in newest_first[member]] == [names[2], names[1], names[0]]
    assert "NextToken" not in newest_first
    assert newest_first[member][0] == {
        name_member: names[2],
        arn_member: arns[names[2]],
        "CreationTime": T0 + 2 * HOUR,
    }
    by_name = listing(NameContains=prefix.upper(), SortBy="Name", SortOrder="Ascending")
    assert [s[name_member] for s in by_name[member]] == sorted(names)
    after = listing(NameContains=prefix, CreationTimeAfter=T0 + HOUR / 2)
    assert [s[name_member] for s in after[member]] == [names[2], names[1]]
    before = listing(NameContains=prefix, CreationTimeBefore=T0 + HOUR * 1.5, SortOrder="Ascending")
    assert [s[name_member] for s in before[member]] == [names[0], names[1]]
    assert listing(NameContains=prefix + "-z")[member] == []

    pages = every_page(listing, member, name_member, NameContains=prefix, SortBy="Name", MaxResults=2)
    assert pages == [[names[2], names[0]], [names[1]]]  # by name, descending


def test_a_list_pages_ten_at_a_time_unless_asked(backend) -> None:
    prefix = unique("ten")
    names = [f"{prefix}-{i:02}" for i in range(11)]
    for name in names:
        make_model(backend, name)
    first = backend.list_models(NameContains=prefix, SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in first["Models"]] == names[:10]
    rest = backend.list_models(
        NameContains=prefix, SortBy="Name", SortOrder="Ascending", NextToken=first["NextToken"]
    )
    assert [m["ModelName"] for m in rest["Models"]] == names[10:] and "NextToken" not in rest
    # The token is the same one ListTrainingJobs and ListTags give: an offset, nothing else.
    assert first["NextToken"] == list_token(10)


def test_endpoints_list_by_status_and_last_modified_time(backend) -> None:
    prefix = unique("ep")
    rows = [  # name, status, created, last modified
        (f"{prefix}-a", "InService", T0, T0 + 5 * HOUR),
        (f"{prefix}-b", "Failed", T0 + HOUR, T0 + 2 * HOUR),
        (f"{prefix}-c", "Creating", T0 + 2 * HOUR, T0 + 2 * HOUR),
        (f"{prefix}-d", "InService", T0 + 3 * HOUR, T0 + 4 * HOUR),
    ]
    arns = {name: make_endpoint(name, status, created, modified) for name, status, created, modified in rows}

    listed = backend.list_endpoints(NameContains=prefix)["Endpoints"]
    assert [e["EndpointName"] for e in listed] == [f"{prefix}-d", f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"]
    assert listed[0] == {
        "EndpointName": f"{prefix}-d",
        "EndpointArn": arns[f"{prefix}-d"],
        "CreationTime": T0 + 3 * HOUR,
        "LastModifiedTime": T0 + 4 * HOUR,
        "EndpointStatus": "InService",
    }
    serving = backend.list_endpoints(NameContains=prefix, StatusEquals="InService")["Endpoints"]
    assert [e["EndpointName"] for e in serving] == [f"{prefix}-d", f"{prefix}-a"]
    changed = backend.list_endpoints(NameContains=prefix, LastModifiedTimeAfter=T0 + 3 * HOUR)["Endpoints"]
    assert [e["EndpointName"] for e in changed] == [f"{prefix}-d", f"{prefix}-a"]
    unchanged = backend.list_endpoints(NameContains=prefix, LastModifiedTimeBefore=T0 + 3 * HOUR)
    assert [e["EndpointName"] for e in unchanged["Endpoints"]] == [f"{prefix}-c", f"{prefix}-b"]
    # By status, ascending; equal statuses keep the order they were made in.
    pages = every_page(
        backend.list_endpoints,
        "Endpoints",
        "EndpointName",
        NameContains=prefix,
        SortBy="Status",
        SortOrder="Ascending",
        MaxResults=3,
    )
    assert pages == [[f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"], [f"{prefix}-d"]]


def test_training_jobs_list_through_the_same_pages(backend) -> None:
    prefix = unique("jobs")
    make_job(f"{prefix}-a", "Completed", T0, ended=T0 + HOUR)
    make_job(f"{prefix}-b", "Stopped", T0 + HOUR, ended=T0 + 2 * HOUR)
    make_job(f"{prefix}-c", "Failed", T0 + 2 * HOUR)
    pages = every_page(
        backend.list_training_jobs,
        "TrainingJobSummaries",
        "TrainingJobName",
        NameContains=prefix,
        SortBy="Status",
        MaxResults=2,
    )
    assert pages == [[f"{prefix}-b", f"{prefix}-c"], [f"{prefix}-a"]]
    summaries = backend.list_training_jobs(NameContains=prefix, StatusEquals="Completed")[
        "TrainingJobSummaries"
    ]
    assert summaries == [
        {
            "TrainingJobName": f"{prefix}-a",
            "TrainingJobArn": arn_for("training-job", f"{prefix}-a"),
            "CreationTime": T0,
            "LastModifiedTime": T0 + HOUR,
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "TrainingEndTime": T0 + HOUR,
        }
    ]
    failed = backend.list_training_jobs(NameContains=prefix, StatusEquals="Failed")["TrainingJobSummaries"]
    assert "TrainingEndTime" not in failed[0]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not base64 at all!",
        list_token(-1),
        list_token(2**63),  # past what the database's OFFSET holds
        "eyJvZmZzZXQiOiAiMTAifQ==",  # {"offset": "10"}: not a number
        "WzEwXQ==",  # [10]
    ],
)
@pytest.mark.parametrize(
    "method", ["list_models", "list_endpoint_configs", "list_endpoints", "list_training_jobs"]
)
def test_a_token_the_backend_did_not_make_is_refused(backend, method, token) -> None:
    assert refusal(lambda: getattr(backend, method)(NextToken=token)) == (
        "ValidationException",
        "The pagination token is not valid.",
    )


def test_parameters_the_service_refuses_are_refused(backend) -> None:
    code, message = refusal(lambda: backend.list_models(MaxResults=101))
    assert code == "ValidationException" and "maxResults" in message
    code, message = refusal(lambda: backend.list_models(SortBy="Status"))  # models have no status
    assert code == "ValidationException" and "sortBy" in message
    code, _ = refusal(lambda: backend.list_endpoints(StatusEquals="Sleeping"))
    assert code == "ValidationException"
    with pytest.raises(ParamValidationError):  # boto3 would not send it: no such parameter
        backend.list_endpoint_configs(StatusEquals="InService")


def tags_of(backend: LocalBackend, arn: str) -> list[dict[str, str]]:
    return backend.list_tags(ResourceArn=arn, MaxResults=100)["Tags"]


@pytest.mark.parametrize("kind", ["model", "endpoint"])
def test_tags_are_added_replaced_and_deleted(backend, kind) -> None:
    name = unique("tags")
    if kind == "model":
        arn = make_model(backend, name, tags=[{"Key": "a", "Value": "1"}])
    else:
        arn = make_endpoint(name, "InService", T0, T0)
    backend.add_tags(arn, [{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "one"}])
    expected = [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]
    assert tags_of(backend, arn) == (expected if kind == "model" else expected[::-1])
    backend.delete_tags(arn, ["a", "never-there"])
    assert tags_of(backend, arn) == [{"Key": "b", "Value": "2"}]
    backend.add_tags(arn, [{"Key": "c", "Value": "x"}, {"Key": "c", "Value": "last"}])
    assert tags_of(backend, arn) == [{"Key": "b", "Value": "2"}, {"Key": "c", "Value": "last"}]


@pytest.mark.django_db(transaction=True)
def test_tag_changes_at_the_same_time_all_land(backend) -> None:
    """Each change reads and rewrites the tags under the row's lock: none is lost to another."""
    arn = make_model(backend, unique("race"))
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def tag(side: str) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(20):
                backend.add_tags(arn, [{"Key": f"{side}{i}", "Value": side}])
        except BaseException as exc:  # reported below: an assertion in a thread would be lost
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tag, args=(side,)) for side in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert sorted(t["Key"] for t in tags_of(backend, arn)) == sorted(
        f"{s}{i}" for s in "ab" for i in range(20)
    )


def test_no_resource_gets_more_than_fifty_tags(backend) -> None:
    name = unique("full")
    arn = make_model(backend, name, tags=[{"Key": f"k{i}", "Value": "v"} for i in range(40)])
    backend.add_tags(arn, [{"Key": f"k{i}", "Value": "w"} for i in range(30, MAX_TAGS)])  # 10 new
    assert len(tags_of(backend, arn)) == MAX_TAGS == 50
    before = tags_of(backend, arn)
    assert refusal(lambda: backend.add_tags(arn, [{"Key": "one-more", "Value": "v"}])) == (
        "ResourceLimitExceeded",
        f"You have exceeded the tag limit of 50 tags for resource {arn}.",
    )
    assert tags_of(backend, arn) == before  # nothing changed
    backend.add_tags(arn, [{"Key": "k0", "Value": "changed"}])  # replacing one is no new tag
    assert {"Key": "k0", "Value": "changed"} in tags_of(backend, arn)
    code, _ = refusal(lambda: backend.add_tags(arn, [{"Key": f"n{i}", "Value": "v"} for i in range(51)]))
    assert code == "ValidationException"  # more than 50 in one request: the service model's rule


def test_tags_of_a_resource_that_does_not_exist_are_refused(backend) -> None:
    name = unique("real")
    arn = make_model(backend, name)
    others = [
        arn.replace(name, "no-such-model"),
        arn.replace(name, name.upper()),  # the name part is always lower case
        arn.replace("000000000000", "123456789012"),  # another account's model of that name
        arn.replace(":model/", ":notebook-instance/"),
        arn_for("endpoint", name),  # a model is not an endpoint
    ]
    for other in others:
        message = f"Resource {other} does not exist."
        with pytest.raises(ClientError) as added:
            backend.add_tags(other, [{"Key": "a", "Value": "1"}])
        with pytest.raises(ClientError) as deleted:
            backend.delete_tags(other, ["a"])
        for err in (added, deleted):
            assert err.value.response["Error"] == {"Code": "ValidationException", "Message": message}
    assert tags_of(backend, arn) == []
    code, message = refusal(lambda: backend.add_tags("not an arn", [{"Key": "a", "Value": "1"}]))
    assert code == "ValidationException" and "resourceArn" in message
