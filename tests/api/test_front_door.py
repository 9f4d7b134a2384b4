"""The API's front door through unmodified boto3: identity, and every attack on the signature.

Each attack is a real botocore client doing something a legitimate client would not (a wrong
secret, a body changed after signing, a clock 16 minutes off, no signature, a request sent
twice); the answer is checked as botocore parses it (``ClientError``'s code) and the server's
state afterwards.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import urllib.parse
from urllib.parse import unquote

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

pytestmark = pytest.mark.django_db(transaction=True)


def code_of(call) -> tuple[str, int, dict]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response


# --- what works ------------------------------------------------------------------------------------


def test_get_caller_identity_names_the_keys_user(api) -> None:
    identity = api.client("sts").get_caller_identity()
    assert identity["Account"] == "000000000000"
    assert identity["Arn"] == "arn:aws:iam::000000000000:user/dora"
    assert identity["UserId"].startswith("AIDA") and len(identity["UserId"]) == 21
    assert identity["ResponseMetadata"]["RequestId"]


def test_the_key_records_its_last_use(api) -> None:
    from jobs.awsapi.models import AccessKey

    assert AccessKey.objects.get(access_key_id=api.key_id).last_used_at is None
    api.client("sts").get_caller_identity()
    assert AccessKey.objects.get(access_key_id=api.key_id).last_used_at is not None


def test_get_role_trusts_sagemaker_as_iam_returns_it(api, settings) -> None:
    settings.ANYJOB_ROLE_ARN = "arn:aws:iam::123456789012:role/service/ml-team"
    iam = api.client("iam")
    role = iam.get_role(RoleName="ml-team")["Role"]
    assert role["Arn"] == "arn:aws:iam::123456789012:role/service/ml-team"
    assert role["Path"] == "/service/"
    assert role["RoleId"].startswith("AROA")
    # botocore decodes the URL-encoded document IAM sends
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert api.client("sts").get_caller_identity()["Account"] == "123456789012"

    code, status, response = code_of(lambda: iam.get_role(RoleName="someone-elses-role"))
    assert (code, status) == ("NoSuchEntity", 404)
    assert response["Error"]["Message"] == "The role with name someone-elses-role cannot be found."


def test_get_role_sends_the_document_url_encoded(api) -> None:
    """What IAM puts on the wire, before botocore decodes it."""
    iam = api.client("iam")
    seen = {}

    def keep(response_dict, **kwargs):
        seen["body"] = response_dict["body"].decode()

    iam.meta.events.register("before-parse.iam.GetRole", keep)
    iam.get_role(RoleName="anyjob-local")
    raw = seen["body"].split("<AssumeRolePolicyDocument>")[1].split("</AssumeRolePolicyDocument>")[0]
    assert raw.startswith("%7B%22Version%22")
    assert json.loads(unquote(raw))["Statement"][0]["Action"] == "sts:AssumeRole"
    assert 'xmlns="https://iam.amazonaws.com/doc/2010-05-08/"' in seen["body"]
    assert "<ResponseMetadata>" in seen["body"]


def test_simulate_principal_policy_allows_the_roles_sagemaker_actions(api) -> None:
    iam = api.client("iam")
    role = "arn:aws:iam::000000000000:role/anyjob-local"
    results = iam.simulate_principal_policy(
        PolicySourceArn=role,
        ActionNames=[
            "sagemaker:CreateTrainingJob",
            "s3:GetObject",
            "iam:PassRole",
            "ec2:CreateNetworkInterface",
            "ec2:DescribeVpcs",
            "ec2:RunInstances",
        ],
    )["EvaluationResults"]
    decisions = {r["EvalActionName"]: r["EvalDecision"] for r in results}
    assert decisions == {
        "sagemaker:CreateTrainingJob": "allowed",
        "s3:GetObject": "allowed",
        "iam:PassRole": "allowed",
        # What a job in a VPC needs (SDK v3's ModelTrainer checks these), not EC2 at large.
        "ec2:CreateNetworkInterface": "allowed",
        "ec2:DescribeVpcs": "allowed",
        "ec2:RunInstances": "implicitDeny",
    }
    code, _, _ = code_of(
        lambda: iam.simulate_principal_policy(
            PolicySourceArn="arn:aws:iam::999999999999:role/not-known", ActionNames=["sagemaker:*"]
        )
    )
    assert code == "NoSuchEntity"


# --- attacks ---------------------------------------------------------------------------------------


def test_a_wrong_secret_is_refused_in_each_protocols_shape(api) -> None:
    wrong = "x" * 40
    code, status, _ = code_of(lambda: api.client("sts", secret=wrong).get_caller_identity())
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    code, status, _ = code_of(
        lambda: api.client("logs", secret=wrong).describe_log_streams(
            logGroupName="/aws/sagemaker/TrainingJobs"
        )
    )
    assert (code, status) == ("InvalidSignatureException", 400)
    code, status, _ = code_of(lambda: api.client("sagemaker", secret=wrong).list_training_jobs())
    assert (code, status) == ("InvalidSignatureException", 400)


def test_a_body_changed_after_signing_is_refused(api) -> None:
    iam = api.client("iam")

    def tamper(request, **kwargs):
        request.body = request.body.replace("ec2%3ARunInstances", "sagemaker%3AXXXXXXXXXXXXXX")

    iam.meta.events.register("before-send.iam.SimulatePrincipalPolicy", tamper)
    code, _, _ = code_of(
        lambda: iam.simulate_principal_policy(
            PolicySourceArn="arn:aws:iam::000000000000:role/anyjob-local", ActionNames=["ec2:RunInstances"]
        )
    )
    assert code == "SignatureDoesNotMatch"


def test_another_users_key_id_with_my_secret_is_refused(api, django_user_model) -> None:
    from jobs.awsapi.models import AccessKey

    victim = django_user_model.objects.create_user("victim", password="victim-password")
    theirs, _ = AccessKey.create_for(victim)
    code, _, _ = code_of(lambda: api.client("sts", key_id=theirs.access_key_id).get_caller_identity())
    assert code == "SignatureDoesNotMatch"
    assert AccessKey.objects.get(pk=theirs.pk).last_used_at is None  # never counted as used


def test_unknown_and_revoked_keys_are_refused(api) -> None:
    from jobs.awsapi.models import AccessKey

    code, status, _ = code_of(lambda: api.client("sts", key_id="AKIA" + "Z" * 16).get_caller_identity())
    assert (code, status) == ("InvalidClientTokenId", 403)

    sts, logs = api.client("sts"), api.client("logs")
    sts.get_caller_identity()
    AccessKey.objects.get(access_key_id=api.key_id).revoke()
    code, _, response = code_of(sts.get_caller_identity)
    assert code == "InvalidClientTokenId"
    assert response["Error"]["Message"] == "The security token included in the request is invalid."
    code, _, _ = code_of(lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs"))
    assert code == "UnrecognizedClientException"


def test_a_user_who_is_deactivated_cannot_use_their_keys(api) -> None:
    api.user.is_active = False
    api.user.save()
    code, _, _ = code_of(api.client("sts").get_caller_identity)
    assert code == "InvalidClientTokenId"


@pytest.mark.parametrize("minutes", [16, -16])
def test_a_request_signed_16_minutes_off_is_refused(api, monkeypatch, minutes: int) -> None:
    import botocore.auth

    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: skewed)
    code, status, response = code_of(api.client("sts").get_caller_identity)
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    word = "expired" if minutes > 0 else "not yet current"
    assert response["Error"]["Message"].startswith(f"Signature {word}: {skewed:%Y%m%dT%H%M%SZ} is ")
    code, _, response = code_of(
        lambda: api.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs")
    )
    assert code == "InvalidSignatureException"
    assert "15 min." in response["Error"]["Message"]


def test_a_request_signed_14_minutes_ago_is_accepted(api, monkeypatch) -> None:
    import botocore.auth

    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=14)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: skewed)
    assert api.client("sts").get_caller_identity()["Arn"].endswith(":user/dora")


def test_unsigned_requests_are_refused(api) -> None:
    code, status, _ = code_of(api.client("sts", signature_version=UNSIGNED).get_caller_identity)
    assert (code, status) == ("MissingAuthenticationToken", 403)
    logs = api.client("logs", signature_version=UNSIGNED)
    code, _, _ = code_of(lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs"))
    assert code == "MissingAuthenticationTokenException"
    code, _, _ = code_of(api.client("sagemaker", signature_version=UNSIGNED).list_training_jobs)
    assert code == "MissingAuthenticationTokenException"
    code, status, _ = code_of(api.client("s3", signature_version=UNSIGNED).list_buckets)
    assert (code, status) == ("AccessDenied", 403)


def _capture_and_replay(client, event: str):
    """Send the next call normally, keeping its signed headers and body; the call after it is
    the same bytes on the wire (what someone who captured the first request would send)."""
    captured: dict = {}

    def keep_or_replay(request, **kwargs):
        if hasattr(request.body, "read"):  # S3's bodies are streams: keep the bytes, send them
            request.body = request.body.read()
        if "headers" not in captured:
            captured["headers"] = dict(request.headers)
            captured["body"] = request.body
        else:
            for name in list(request.headers):
                del request.headers[name]
            for name, value in captured["headers"].items():
                request.headers[name] = value
            request.body = captured["body"]

    client.meta.events.register(event, keep_or_replay)


def test_a_failed_write_sent_again_is_not_a_replay(api) -> None:
    from jobs.awsapi.models import SeenSignature

    sm = api.client("sagemaker")
    _capture_and_replay(sm, "before-send.sagemaker.DeleteTags")
    arn = "arn:aws:sagemaker:us-east-1:000000000000:training-job/no-such-job"
    # A request that fails is not held against the client: botocore may retry it as it is.
    first, _, _ = code_of(lambda: sm.delete_tags(ResourceArn=arn, TagKeys=["team"]))
    again, _, _ = code_of(lambda: sm.delete_tags(ResourceArn=arn, TagKeys=["team"]))
    assert first == again == "ValidationException"
    assert SeenSignature.objects.count() == 0


def test_a_replayed_successful_write_is_refused_and_does_nothing(api, monkeypatch) -> None:
    """CreateTrainingJob answered once; the same bytes again are refused before any handler."""
    from jobs.awsapi import replay, sigv4
    from jobs.awsapi.models import SeenSignature

    signed = sigv4.SignedRequest(
        key=None,
        credential=sigv4.Credential(api.key_id, "20260101", "us-east-1", "sagemaker"),
        signature="a" * 64,
        amz_date="20260101T000000Z",
        timestamp=dt.datetime.now(dt.UTC),
        signing_key=b"",
        payload_hash=sigv4.EMPTY_SHA256,
        presigned=False,
    )
    with replay.guard(signed, "CreateTrainingJob") as outcome:
        outcome.succeeded()
    with pytest.raises(sigv4.AuthError) as info, replay.guard(signed, "CreateTrainingJob"):
        pytest.fail("the handler ran for a replayed request")
    assert info.value.kind == "replayed"
    # Reads are not guarded: waiters and log tails repeat them.
    for _ in range(2):
        with replay.guard(signed, "DescribeTrainingJob") as outcome:
            outcome.succeeded()
    assert SeenSignature.objects.filter(signature="a" * 64).count() == 1


def test_a_replayed_read_is_answered(api) -> None:
    sts = api.client("sts")
    _capture_and_replay(sts, "before-send.sts.GetCallerIdentity")
    assert sts.get_caller_identity()["Arn"] == sts.get_caller_identity()["Arn"]


def test_a_body_over_the_limit_gets_413_and_is_not_read_into_a_handler(api) -> None:
    logs = api.client("logs")
    code, status, response = code_of(
        lambda: logs.filter_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", filterPattern="x" * 7_000_000
        )
    )
    assert (code, status) == ("413", 413)
    assert response["Error"]["Message"] == "HTTP content length exceeded 6291456 bytes."


def test_malformed_json_is_a_serialization_exception(api) -> None:
    logs = api.client("logs")

    def garble(request, **kwargs):
        request.data = b'{"logGroupName": '  # signed as it is: only the JSON is wrong

    logs.meta.events.register("before-sign.logs.DescribeLogStreams", garble)
    code, status, _ = code_of(lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs"))
    assert (code, status) == ("SerializationException", 400)


def test_an_unknown_operation_is_refused(api) -> None:
    logs = api.client("logs")

    def retarget(request, **kwargs):
        del request.headers["X-Amz-Target"]
        request.headers["X-Amz-Target"] = "Logs_20140328.DeleteLogGroup"

    logs.meta.events.register("before-sign.logs.DescribeLogStreams", retarget)
    code, status, response = code_of(
        lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs")
    )
    assert (code, status) == ("UnknownOperationException", 400)
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    code, _, _ = code_of(lambda: api.client("iam").list_users())
    assert code == "InvalidAction"


def test_errors_carry_a_request_id_and_no_html(api) -> None:
    """Below botocore: a bare POST with a session-less, CSRF-less form gets AWS's XML, not a page."""
    host, port = urllib.parse.urlsplit(api.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        "/aws",
        body="Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 403
    assert "<Code>MissingAuthenticationToken</Code>" in body and "<html" not in body.lower()
    assert response.getheader("x-amzn-RequestId")
    conn.close()


def test_a_captured_successful_write_replayed_is_refused_and_changes_nothing(api, tmp_path) -> None:
    """CreateTrainingJob answered once; the same bytes again are refused before any handler
    (not ResourceInUse, which would mean the handler ran), and no second job exists."""
    from tests.local.jobs import training_request, unique

    code = tmp_path / "code"
    code.mkdir()
    (code / "hello.py").write_text("print('hello')\n")
    name = unique("replayed")
    sm = api.client("sagemaker")
    _capture_and_replay(sm, "before-send.sagemaker.CreateTrainingJob")
    request = training_request(name, code, "hello.py", tmp_path / "out")
    sm.create_training_job(**request)
    replayed, _, response = code_of(lambda: sm.create_training_job(**request))
    assert replayed == "InvalidSignatureException"
    assert "already received and answered" in response["Error"]["Message"]
    # A fresh signature of the same request reaches the handler: AWS's answer to a duplicate.
    # (Signed in the same second, the same request has the same signature: wait for the next.)
    time.sleep(1.05 - time.time() % 1)
    fresh, _, _ = code_of(lambda: api.client("sagemaker").create_training_job(**request))
    assert fresh == "ResourceInUse"
    names = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]]
    assert names == [name]


# --- what the replay guard leaves alone, the path without RAW_URI, SigV2 presigned URLs -------


@pytest.fixture
def s3_store(settings, tmp_path):
    settings.ANYJOB_S3_ROOT = tmp_path / "s3"
    return settings.ANYJOB_S3_ROOT


def test_heads_are_reads_and_only_non_idempotent_sagemaker_writes_are_guarded() -> None:
    from jobs.awsapi import replay

    assert not replay.changes_state("HeadObject") and not replay.changes_state("HeadBucket")
    assert replay.guarded("sagemaker", "CreateTrainingJob") and replay.guarded("sagemaker", "DeleteEndpoint")
    assert not replay.guarded("sagemaker", "AddTags") and not replay.guarded("sagemaker", "DeleteTags")
    assert not replay.guarded("s3", "PutObject") and not replay.guarded("s3", "DeleteObject")
    assert not replay.guarded("sagemaker", "DescribeTrainingJob")


def test_identical_s3_writes_and_tags_are_answered_as_aws_answers_them(api, s3_store) -> None:
    """The same bytes on the wire twice (what botocore's retry after a lost answer sends, in the
    same second): S3 and idempotent writes succeed both times, nothing is claimed."""
    from jobs.awsapi.models import SeenSignature

    s3 = api.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="replays")
    _capture_and_replay(s3, "before-send.s3.PutObject")
    s3.put_object(Bucket="replays", Key="k", Body=b"same")
    s3.put_object(Bucket="replays", Key="k", Body=b"same")
    assert s3.get_object(Bucket="replays", Key="k")["Body"].read() == b"same"
    _capture_and_replay(s3, "before-send.s3.DeleteObject")
    s3.delete_object(Bucket="replays", Key="k")
    s3.delete_object(Bucket="replays", Key="k")  # S3 answers 204 for a missing key too
    sm = api.client("sagemaker")
    image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310"
    arn = sm.create_model(
        ModelName=f"tags-{int(time.time() * 1000)}",
        ExecutionRoleArn="arn:aws:iam::000000000000:role/anyjob-local",
        PrimaryContainer={"Image": image},
    )["ModelArn"]
    _capture_and_replay(sm, "before-send.sagemaker.AddTags")
    for _ in range(2):
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ml"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert SeenSignature.objects.count() == 1  # the CreateModel alone


def test_a_key_beyond_ascii_verifies_without_raw_uri(api, s3_store) -> None:
    """pytest-django's live_server (wsgiref) has no RAW_URI: the path Django decoded is
    re-encoded from UTF-8, so the signature of a key beyond ASCII matches."""
    from jobs.awsapi import sigv4

    meta = {"SCRIPT_NAME": "", "PATH_INFO": "/aws/b/ünï/日本"}
    assert sigv4.raw_path(meta) == "/aws/b/" + urllib.parse.quote("ünï/日本".encode(), safe="/")
    s3 = api.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="unicode")
    for key in ("ünï/cödé.csv", "日本/データ", "emoji/🙂"):
        s3.put_object(Bucket="unicode", Key=key, Body=key.encode())
        assert s3.get_object(Bucket="unicode", Key=key)["Body"].read() == key.encode()
        assert s3.head_object(Bucket="unicode", Key=key)["ContentLength"] == len(key.encode())


def test_a_sigv2_presigned_url_is_refused_saying_to_use_s3v4(api, s3_store) -> None:
    import requests

    s3 = api.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="presigned")
    s3.put_object(Bucket="presigned", Key="k", Body=b"secret")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "k"})
    assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url  # botocore's default: SigV2
    answer = requests.get(url, timeout=10, proxies={"http": None, "https": None})
    assert answer.status_code == 400 and b"secret" not in answer.content
    assert 'signature_version="s3v4"' in unquote(answer.text).replace("&quot;", '"')
    v4 = api.client("s3", s3={"addressing_style": "path"}, signature_version="s3v4")
    good = v4.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "k"})
    assert requests.get(good, timeout=10, proxies={"http": None, "https": None}).content == b"secret"
