"""The new-job page on the local backend: ``s3://`` locations need the execution role's
credentials (``ANYJOB_LOCAL_ROLES``), and the page says so next to each field."""

from __future__ import annotations

import json

import pytest

from jobs.models import TrainingJob
from tests.test_new_job import EXAMPLES, form, submit, upload

pytestmark = pytest.mark.django_db

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"
MESSAGE = (
    f"The role {ROLE} is not mapped to credentials on this anyjob server: add it to ANYJOB_LOCAL_ROLES "
    "(see README, Security model) or use file:// locations."
)


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


def s3_job() -> dict[str, str]:
    return form(
        channels=[
            {"name": "train", "uri": f"file://{EXAMPLES}/linear/data"},
            {"name": "test", "uri": "s3://bucket/test/"},
        ],
        output_path="s3://bucket/out",
    )


def test_s3_locations_under_an_unmapped_role_are_refused_next_to_their_fields(signed_in, settings):
    settings.ANYJOB_ROLE_ARN = ROLE
    settings.ANYJOB_LOCAL_ROLES = ""
    settings.ANYJOB_S3 = "aws"  # s3:// is a real S3 here: with the embedded one no role is needed
    response, delay = submit(signed_in, s3_job(), [upload()])
    assert response.status_code == 200
    page = response.context["page"]
    assert page.channels.forms[1].errors["uri"] == [MESSAGE]
    assert "uri" not in page.channels.forms[0].errors  # file:// needs no role
    assert response.context["form"].errors["output_path"] == [MESSAGE]
    assert "ANYJOB_LOCAL_ROLES" in response.content.decode()
    assert not TrainingJob.objects.exists()
    delay.assert_not_called()


def test_s3_locations_in_the_embedded_store_need_no_role(signed_in, settings):
    """The default config (no roles, no S3 endpoint): ``s3://`` is anyjob's own store, shared
    by the team as the ``file://`` one is, so the form takes it under an unmapped role."""
    settings.ANYJOB_ROLE_ARN = ROLE
    settings.ANYJOB_LOCAL_ROLES = ""
    settings.ANYJOB_S3 = "auto"
    response, delay = submit(signed_in, s3_job(), [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    delay.assert_called_once()


def test_a_mapped_role_may_name_s3(signed_in, settings):
    settings.ANYJOB_ROLE_ARN = ROLE
    settings.ANYJOB_LOCAL_ROLES = json.dumps({ROLE: {"access_key_id": "AKIAX", "secret_access_key": "s"}})
    response, delay = submit(signed_in, s3_job(), [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    delay.assert_called_once()
    assert "AKIAX" not in signed_in.get(response["Location"]).content.decode()


def test_file_locations_need_no_role(signed_in, settings):
    settings.ANYJOB_LOCAL_ROLES = ""
    data = form(channels=[{"name": "train", "uri": f"file://{EXAMPLES}/linear/data"}])
    response, delay = submit(signed_in, data, [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    delay.assert_called_once()
