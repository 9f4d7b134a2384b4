"""Signing in as a team: throttled attempts, invitations by one-time link, optional OpenID Connect.

- Throttling is django-axes (settings ``AXES_*``): after ``ANYJOB_SIGNIN_FAILURES`` failed
  sign-ins for one username, or from one address, that username or address is refused for
  ``ANYJOB_SIGNIN_COOLOFF_MINUTES``; ``locked_out`` says so on the sign-in page.
- An invitation is an account with no usable password and a link to set one: Django's
  password-reset token, which stops working once the password is set (or after
  ``ANYJOB_INVITE_DAYS``). The admin copies the link, or anyjob sends it by email.
- Single sign-on is mozilla-django-oidc, on when ``OIDC_RP_CLIENT_ID`` is set (``TeamOIDCBackend``).
"""

from __future__ import annotations

import math
import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import permission_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

User = get_user_model()


# --- throttling (django-axes) -----------------------------------------------------------------


def client_ip(request: HttpRequest) -> str | None:
    """The address a sign-in came from: behind the proxy (``ANYJOB_PUBLIC_URL``), the one the
    proxy added last to ``X-Forwarded-For`` (what a client sends itself stands before it)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.PUBLIC_URL is not None and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= settings.ANYJOB_PROXY_COUNT:
            return hops[-settings.ANYJOB_PROXY_COUNT]
    return request.META.get("REMOTE_ADDR")


def locked_out(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    """The sign-in page again, saying when to try again (429)."""
    minutes = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    message = (
        f"Too many failed sign-ins for this account or from this address: try again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}."
    )
    form = AuthenticationForm(request)
    return render(
        request,
        "registration/login.html",
        {"form": form, "locked_out": message, **sso_context()},
        status=429,
    )


# --- invitations --------------------------------------------------------------------------------


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False, help_text="The link is sent there too, if a mail server is set.")
    staff = forms.BooleanField(required=False, label="Staff (may stop or clone anyone's jobs)")

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        User.username_validator(username)
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("There is already an account with this name.")
        return username


def invite_link(request: HttpRequest, user) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    path = reverse("welcome", kwargs={"uidb64": uid, "token": default_token_generator.make_token(user)})
    if settings.PUBLIC_URL is not None:
        return settings.PUBLIC_URL[2] + path
    return request.build_absolute_uri(path)


@permission_required("auth.add_user")
def invite(request: HttpRequest) -> HttpResponse:
    """A staff member names a teammate; anyjob makes the account and a one-time link."""
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = User(username=data["username"], email=data["email"], is_staff=data["staff"])
        user.set_unusable_password()
        user.save()
        link = invite_link(request, user)
        mailed = False
        if data["email"] and settings.EMAIL_HOST:
            send_mail(
                "You are invited to anyjob",
                f"{request.user.get_username()} invited you to anyjob as {user.username}.\n\n"
                f"Choose your password here (the link works once, for {settings.ANYJOB_INVITE_DAYS} days):"
                f"\n{link}\n",
                None,
                [data["email"]],
            )
            mailed = True
        return render(request, "registration/invited.html", {"invitee": user, "link": link, "mailed": mailed})
    return render(request, "registration/invite.html", {"form": form})


class Welcome(auth_views.PasswordResetConfirmView):
    """The invitation link: choose a password (the validators apply), then you are signed in."""

    template_name = "registration/welcome.html"
    success_url = reverse_lazy("history")
    post_reset_login = True
    post_reset_login_backend = "django.contrib.auth.backends.ModelBackend"
    reset_url_token = "set-password"  # noqa: S105 - the path segment, not a secret


welcome = Welcome.as_view()


# --- OpenID Connect -------------------------------------------------------------------------------


def oidc_enabled() -> bool:
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", ""))


def sso_context() -> dict:
    return {"oidc": oidc_enabled(), "oidc_name": settings.ANYJOB_OIDC_NAME}


class TeamOIDCBackend(OIDCAuthenticationBackend):
    """Accounts from the identity provider: matched by verified email; new ones (unless
    ``OIDC_CREATE_USER`` is off) named after ``preferred_username`` or the email's local part."""

    def verify_claims(self, claims: dict) -> bool:
        return bool(claims.get("email")) and claims.get("email_verified", True) is not False

    def get_username(self, claims: dict) -> str:
        wanted = claims.get("preferred_username") or claims["email"].split("@", 1)[0]
        base = re.sub(r"[^\w.@+-]", "-", wanted)[:140] or "user"
        name, n = base, 1
        while User.objects.filter(username__iexact=name).exists():
            n += 1
            name = f"{base}-{n}"
        return name


def _oidc_view(name: str):
    def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("Single sign-on is not set up (OIDC_RP_CLIENT_ID).")
        from mozilla_django_oidc import urls

        handler = {
            "init": urls.OIDCAuthenticateClass,
            "callback": urls.OIDCCallbackClass,
        }[name]
        return handler.as_view()(request, *args, **kwargs)

    return view


oidc_start = _oidc_view("init")
oidc_callback = _oidc_view("callback")


class LoginView(auth_views.LoginView):
    """Django's sign-in page, with the single sign-on button when it is set up."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **sso_context()}
