"""CloudWatch Logs through boto3, over a real local job's log (the local backend, its sandbox)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.local.jobs import training_request, unique, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

GROUP = "/aws/sagemaker/TrainingJobs"
LINES = 25


@pytest.fixture
def job(tmp_path: Path, image_python) -> str:
    from jobs.backends.local.backend import LocalBackend

    code = tmp_path / "code"
    code.mkdir()
    (code / "count.py").write_text(f"for i in range({LINES}):\n    print(f'line {{i}}', flush=True)\n")
    name = unique("logs")
    backend = LocalBackend()
    backend.create_training_job(training_request(name, code, "count.py", tmp_path / "out"))
    assert wait_for(backend, name, timeout=120)["TrainingJobStatus"] == "Completed"
    return name


@pytest.fixture
def image_python():
    from jobs.backends.local import image
    from tests.local.conftest import IMAGE_ENV_ROOT

    return image.ensure_image_env(IMAGE_ENV_ROOT)


def ours(events: list[dict]) -> list[str]:
    return [e["message"].strip() for e in events if e["message"].startswith("line ")]


def test_describe_get_and_filter_a_jobs_log(api, job: str) -> None:
    logs = api.client("logs")
    streams = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=f"{job}/")
    assert "nextToken" not in streams  # the last page: SDK v2's fit(logs=...) loops otherwise
    [stream] = streams["logStreams"]
    name = stream["logStreamName"]
    assert name.startswith(f"{job}/algo-1-")
    assert stream["firstEventTimestamp"] <= stream["lastEventTimestamp"]
    assert stream["arn"].endswith(f":log-group:{GROUP}:log-stream:{name}")
    paged = list(
        logs.get_paginator("describe_log_streams").paginate(logGroupName=GROUP, logStreamNamePrefix=job)
    )
    assert [s["logStreamName"] for p in paged for s in p["logStreams"]] == [name]

    # Following from the head, ten at a time, until the same token comes back.
    seen: list[str] = []
    page = logs.get_log_events(logGroupName=GROUP, logStreamName=name, startFromHead=True, limit=10)
    while True:
        assert len(page["events"]) <= 10
        seen += ours(page["events"])
        token = page["nextForwardToken"]
        page = logs.get_log_events(logGroupName=GROUP, logStreamName=name, nextToken=token, limit=10)
        if not page["events"]:
            assert page["nextForwardToken"] == token
            break
    assert seen == [f"line {i}" for i in range(LINES)]

    # Without startFromHead: the newest events; the backward token walks to older ones.
    tail = logs.get_log_events(logGroupName=GROUP, logStreamName=name, limit=3)
    everything = logs.get_log_events(logGroupName=GROUP, logStreamName=name, startFromHead=True)["events"]
    assert [e["message"] for e in tail["events"]] == [e["message"] for e in everything[-3:]]
    older = logs.get_log_events(
        logGroupName=GROUP, logStreamName=name, nextToken=tail["nextBackwardToken"], limit=3
    )
    assert [e["message"] for e in older["events"]] == [e["message"] for e in everything[-6:-3]]
    again = logs.get_log_events(logGroupName=GROUP, logStreamName=name, nextToken=tail["nextForwardToken"])
    assert again["events"] == [] and again["nextForwardToken"] == tail["nextForwardToken"]

    # Time bounds: endTime is exclusive.
    first_ts = everything[0]["timestamp"]
    bounded = logs.get_log_events(
        logGroupName=GROUP, logStreamName=name, startFromHead=True, startTime=first_ts, endTime=first_ts + 1
    )
    assert all(e["timestamp"] == first_ts for e in bounded["events"]) and bounded["events"]

    # FilterLogEvents (aws logs tail): prefix and terms honoured, pages until no nextToken.
    found: list[str] = []
    ids: set[str] = set()
    kwargs = {
        "logGroupName": GROUP,
        "logStreamNamePrefix": f"{job}/",
        "filterPattern": '"line 1"',
        "limit": 4,
    }
    while True:
        result = logs.filter_log_events(**kwargs)
        found += ours(result["events"])
        ids |= {e["eventId"] for e in result["events"]}
        assert all(e["logStreamName"] == name for e in result["events"])
        if "nextToken" not in result:
            break
        kwargs["nextToken"] = result["nextToken"]
    assert found == ["line 1"] + [f"line {i}" for i in range(10, 20)]
    assert len(ids) == len(found)
    excluded = logs.filter_log_events(logGroupName=GROUP, logStreamNames=[name], filterPattern="line -2")
    assert "line 2" not in ours(excluded["events"]) and "line 3" in ours(excluded["events"])
    assert logs.filter_log_events(logGroupName=GROUP, logStreamNamePrefix="no-such-job/")["events"] == []


def test_missing_groups_and_streams(api, job: str) -> None:
    logs = api.client("logs")
    for call in (
        lambda: logs.get_log_events(logGroupName=GROUP, logStreamName=f"{job}/algo-9-1"),
        lambda: logs.get_log_events(logGroupName=GROUP, logStreamName="no-such-job/algo-1-1"),
        lambda: logs.describe_log_streams(logGroupName="/aws/lambda/anything"),
        lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/no-such-endpoint"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job, orderBy="LastEventTime")
    assert info.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as info:
        logs.get_log_events(logGroupName=GROUP, logStreamName=f"{job}/x", nextToken="forged")
    assert info.value.response["Error"]["Code"] == "InvalidParameterException"
