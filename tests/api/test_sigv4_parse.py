"""``X-Amz-Date`` as SigV4 requires it: ISO 8601 basic format, ASCII digits, a real instant."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.awsapi import sigv4


def meta(amz_date: str, scope_date: str = "20261202") -> dict[str, str]:
    return {
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=AKIAAAAAAAAAAAAAAAAA/{scope_date}/us-east-1/"
        "sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "HTTP_X_AMZ_DATE": amz_date,
    }


def test_a_well_formed_date_is_read_as_utc() -> None:
    parsed = sigv4.parse(meta("20261202T023000Z"), {})
    assert parsed.timestamp == dt.datetime(2026, 12, 2, 2, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "amz_date",
    [
        "20261302T023000Z",  # month 13
        "20260230T000000Z",  # February 30
        "20261202T246000Z",  # hour 24
        "20261202T023000",  # no Z
        "20261202T023000Z ",  # trailing space
        "2026120T023000Z",  # a digit short
        "\uff12\uff10\uff12\uff161202T023000Z",  # full-width digits: int() would read them
        "2026-12-02T02:30:00Z",  # extended format
        "",
    ],
)
def test_a_malformed_date_is_refused_as_malformed(amz_date: str) -> None:
    with pytest.raises(sigv4.AuthError) as refused:
        sigv4.parse(meta(amz_date), {})
    assert refused.value.kind == "malformed"


def test_a_scope_date_in_other_digits_is_refused() -> None:
    with pytest.raises(sigv4.AuthError) as refused:
        sigv4.parse(meta("20261202T023000Z", scope_date="\uff12\uff10\uff12\uff161202"), {})
    assert refused.value.kind == "malformed"
