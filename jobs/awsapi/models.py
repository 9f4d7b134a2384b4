"""Access keys: what a user's code signs API requests with, and the signatures already used.

The secret is needed in clear at every request (SigV4 is an HMAC keyed by it), so it cannot be
stored as a one-way hash like a password. It is stored encrypted with AES-256-GCM under a key
derived from ``SECRET_KEY`` (HMAC-SHA256 of a fixed label), with the access key id as the
associated data: a database dump or backup alone does not reveal any secret, and a ciphertext
moved to another key's row does not decrypt. Changing ``SECRET_KEY`` makes every access key
unusable (create new ones); the web server and the workers already share one ``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import string
import threading
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, models
from django.utils import timezone

from jobs.awsapi.sigv4 import signing_key

#: AWS allows two access keys per IAM user, so that one can be rotated while the other works.
#: anyjob allows a few more active keys (a laptop, a notebook server, CI), and counts only the
#: ones not revoked.
MAX_ACTIVE_KEYS_PER_USER = 5
MAX_DESCRIPTION = 200
KEY_ID_PREFIX = "AKIA"
_KEY_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40
#: ``last_used_at`` is written at most this often per key (one write per request would make
#: every read-only call a database write).
LAST_USED_RESOLUTION_SECONDS = 60


def _cipher() -> AESGCM:
    return _cipher_for(settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _cipher_for(secret_key: str) -> AESGCM:
    """The AES-GCM key derived from ``SECRET_KEY``; kept per value (a test may change it)."""
    key = hmac.new(secret_key.encode(), b"anyjob.awsapi.AccessKey.secret/v1", hashlib.sha256).digest()
    return AESGCM(key)


#: Derived signing keys kept (``AccessKey.signing_key``): a key a day, region and service.
MAX_DERIVED_KEYS = 1024
_DERIVED: dict[tuple[str, ...], bytes] = {}
_DERIVED_LOCK = threading.Lock()


def new_key_id() -> str:
    return KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


class KeyLimitReached(Exception):
    pass


class AccessKeyQuerySet(models.QuerySet):
    def active(self) -> AccessKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class AccessKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_keys")
    access_key_id = models.CharField(max_length=20, unique=True)
    #: base64(nonce ‖ AES-GCM ciphertext of the secret), see the module docstring.
    encrypted_secret = models.CharField(max_length=200)
    description = models.CharField(max_length=MAX_DESCRIPTION, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AccessKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.access_key_id

    @classmethod
    def create_for(cls, user, description: str = "") -> tuple[AccessKey, str]:
        """A new key for ``user`` and its secret (the only time the secret is returned in clear
        by anything but ``secret()``). Refused past ``MAX_ACTIVE_KEYS_PER_USER``."""
        if cls.objects.active().filter(user=user).count() >= MAX_ACTIVE_KEYS_PER_USER:
            raise KeyLimitReached(
                f"You already have {MAX_ACTIVE_KEYS_PER_USER} active access keys, the most anyjob "
                "allows: revoke one you no longer use first."
            )
        secret = new_secret()
        key = cls(user=user, access_key_id=new_key_id(), description=description[:MAX_DESCRIPTION])
        key.set_secret(secret)
        key.save()
        return key, secret

    def set_secret(self, secret: str) -> None:
        nonce = secrets.token_bytes(12)
        sealed = _cipher().encrypt(nonce, secret.encode(), self.access_key_id.encode())
        self.encrypted_secret = base64.b64encode(nonce + sealed).decode()

    def secret(self) -> str:
        raw = base64.b64decode(self.encrypted_secret)
        return _cipher().decrypt(raw[:12], raw[12:], self.access_key_id.encode()).decode()

    def signing_key(self, date: str, region: str, service: str) -> bytes:
        """SigV4's signing key for a day, region and service (what an AWS client derives once a
        day and keeps). Derived keys are kept in this process by the key's id *and ciphertext*,
        so a new secret never meets an old key (nor a new ``SECRET_KEY``, which is part of it);
        the secret itself is not kept, and the row is still read at every request (a revoked key
        is refused at once)."""
        kept = (settings.SECRET_KEY, self.access_key_id, self.encrypted_secret, date, region, service)
        derived = _DERIVED.get(kept)
        if derived is None:
            derived = signing_key(self.secret(), date, region, service)
            with _DERIVED_LOCK:
                if len(_DERIVED) >= MAX_DERIVED_KEYS:
                    _DERIVED.clear()  # yesterday's (or a rotated key's): derived again when needed
                _DERIVED[kept] = derived
        return derived

    @classmethod
    def with_user(cls, access_key_id: str, using: str = "default") -> AccessKey | None:
        """The key and its user (``key.user`` loaded), read fresh in one query, or ``None``.

        Every signed request calls this, so it is one plain parametrised ``SELECT … JOIN``
        instead of the ORM's ``select_related(...).first()``: the same row and columns, but the
        ORM spent ~0.6 ms compiling the query against ~0.08 ms for this. The statement and each
        column's converters are made once per connection wrapper (``_key_query``); the row is
        not cached, so a revoked key or a deactivated user is refused from the very next request."""
        connection = connections[using]
        sql, key_fields, user_fields, converters = _key_query(cls, connection)
        with connection.cursor() as cursor:
            cursor.execute(sql, [access_key_id])
            row = cursor.fetchone()
        if row is None:
            return None
        # Through each field's converters, as the ORM reads them (SQLite's datetimes are text).
        values = []
        for (col, field_converters), value in zip(converters, row, strict=True):
            for convert in field_converters:
                value = convert(value, col, connection)
            values.append(value)
        key = cls.from_db(using, [f.attname for f in key_fields], values[: len(key_fields)])
        user_model = get_user_model()
        key.user = user_model.from_db(using, [f.attname for f in user_fields], values[len(key_fields) :])
        return key

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        """Note a use, at most once per ``LAST_USED_RESOLUTION_SECONDS``."""
        now = timezone.now()
        if (
            self.last_used_at is None
            or (now - self.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_SECONDS
        ):
            AccessKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


class SeenSignature(models.Model):
    """The signature of a state-changing request already answered (``jobs.awsapi.replay``)."""

    signature = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)


def _key_query(model: type[AccessKey], connection: Any) -> tuple[str, list[Any], list[Any], list[Any]]:
    """``AccessKey.with_user``'s statement, the two models' fields and each column's converters,
    made once per connection wrapper (one per thread and database, kept across requests; the
    converters are the wrapper's own)."""
    made = getattr(connection, "_anyjob_key_query", None)
    if made is not None:
        return made
    user_model = get_user_model()
    key_fields, user_fields = model._meta.concrete_fields, user_model._meta.concrete_fields
    q = connection.ops.quote_name
    columns = [f"k.{q(f.column)}" for f in key_fields] + [f"u.{q(f.column)}" for f in user_fields]
    # Identifiers from the models' own metadata, quoted; the one value is a parameter.
    keys, users = q(model._meta.db_table), q(user_model._meta.db_table)
    join = f"u.{q(user_model._meta.pk.column)} = k.{q(model._meta.get_field('user').column)}"
    where = f"k.{q(model._meta.get_field('access_key_id').column)} = %s"
    sql = f"SELECT {', '.join(columns)} FROM {keys} k JOIN {users} u ON {join} WHERE {where}"  # noqa: S608
    ops = connection.ops
    converters = [
        (f.cached_col, ops.get_db_converters(f.cached_col) + f.get_db_converters(connection))
        for f in [*key_fields, *user_fields]
    ]
    made = (sql, list(key_fields), list(user_fields), converters)
    connection._anyjob_key_query = made
    return made
