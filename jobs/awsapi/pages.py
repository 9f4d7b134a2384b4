"""The access-keys settings page (``/settings/keys/``): a signed-in user's own keys only.

The secret of a new key is in the page that answers the create request and nowhere else: it is
not stored in clear, not put in a message or a redirect, and the answer is ``no-store``.
Revoking is a CSRF-protected POST; another user's key is a 404, like a key that does not exist.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from jobs.awsapi.models import MAX_ACTIVE_KEYS_PER_USER, MAX_DESCRIPTION, AccessKey, KeyLimitReached


class KeyForm(forms.Form):
    description = forms.CharField(
        max_length=MAX_DESCRIPTION,
        required=False,
        help_text="Where you will use it (a laptop, a notebook server, CI), to know which to revoke.",
    )


def endpoint_url() -> str:
    """The endpoint URL clients set (``AWS_ENDPOINT_URL``): the public address, else loopback."""
    base = (
        settings.PUBLIC_URL[2]
        if settings.PUBLIC_URL is not None
        else f"http://127.0.0.1:{settings.ANYJOB_PORT}"
    )
    return base.rstrip("/") + "/aws"


def export_lines(key_id: str, secret: str) -> list[str]:
    return [
        f"export AWS_ENDPOINT_URL={endpoint_url()}",
        f"export AWS_ACCESS_KEY_ID={key_id}",
        f"export AWS_SECRET_ACCESS_KEY={secret}",
        f"export AWS_DEFAULT_REGION={settings.ANYJOB_REGION}",
    ]


@login_required
def keys(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = AccessKey.create_for(request.user, form.cleaned_data["description"])
        except KeyLimitReached as e:
            form.add_error(None, str(e))
        else:
            created = {"key": key, "lines": "\n".join(export_lines(key.access_key_id, secret))}
            form = KeyForm()
    own = AccessKey.objects.filter(user=request.user)
    response = render(
        request,
        "awsapi/keys.html",
        {
            "form": form,
            "created": created,
            "keys": own,
            "active_count": sum(1 for k in own if k.active),
            "max_keys": MAX_ACTIVE_KEYS_PER_USER,
            "endpoint_url": endpoint_url(),
            "region": settings.ANYJOB_REGION,
        },
        status=201 if created else 200,
    )
    add_never_cache_headers(response)  # the secret must not stay in a cache
    return response


@login_required
@require_POST
def revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(AccessKey, pk=pk, user=request.user)
    if key.active:
        key.revoke()
        messages.success(
            request, f"Access key {key.access_key_id} is revoked: requests signed with it are refused."
        )
    return redirect("access_keys")
