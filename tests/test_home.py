import pytest

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_visitors_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_sends_signed_in_users_to_the_job_history(client, alice):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"


def test_the_login_page_renders_with_csrf(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content
    assert b'name="password"' in response.content


def test_it_signs_in_and_goes_to_the_jobs(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wonderland"})
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"
    assert client.get("/jobs/").status_code == 200


def test_it_refuses_a_wrong_password(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


def test_it_signs_out_by_post(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/jobs/").status_code == 302


def test_it_does_not_sign_out_by_get(client, alice):
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/jobs/").status_code == 200
