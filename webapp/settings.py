"""anyjob's Django settings, all from the environment (see README.md, "Configuration").

The embedded default needs none of them: SQLite, the local backend and a ``file://``
artifact store, all under ``var/``.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from jobs.backends.local.resources import default_max_instances
from webapp.env import env_bool, env_list, env_number, env_public_url, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ANYJOB_VAR_DIR", str(BASE_DIR / "var"))).resolve()
#: The address teammates open (https://anyjob.example.com) when anyjob serves a team behind a
#: proxy; unset on one laptop. Hosts, trusted origins and the HTTPS settings follow from it.
PUBLIC_URL = env_public_url("ANYJOB_PUBLIC_URL")


def _secret_key() -> str:
    """``DJANGO_SECRET_KEY``, else one generated once and kept in ``var/`` (never rendered)."""
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    if PUBLIC_URL is not None:
        # Several web servers and workers sign the same sessions and links: one shared key.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when ANYJOB_PUBLIC_URL is (the same value for every "
            "web server and worker)"
        )
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
#: Where `make run`'s web server listens (0.0.0.0 lets a team reach it) and on which port.
ANYJOB_BIND = env_str("ANYJOB_BIND", "127.0.0.1")
ANYJOB_PORT = int(env_number("ANYJOB_PORT", 8000, minimum=1))
if PUBLIC_URL is not None:
    scheme, public_host, public_origin = PUBLIC_URL
    # Loopback stays allowed for the health checks run beside the server (compose, make run).
    ALLOWED_HOSTS = [public_host, *(h for h in ALLOWED_HOSTS if h != public_host)]
    CSRF_TRUSTED_ORIGINS = [public_origin]
    if scheme == "https":
        # The proxy in front ends TLS and says so in X-Forwarded-Proto (it must set it itself,
        # never pass on the client's). Cookies travel over HTTPS only; browsers remember HSTS.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        SECURE_SSL_REDIRECT = True
        SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
        SESSION_COOKIE_SECURE = True
        CSRF_COOKIE_SECURE = True
        SECURE_HSTS_SECONDS = int(env_number("ANYJOB_HSTS_SECONDS", 31_536_000))
        SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ANYJOB_HSTS_INCLUDE_SUBDOMAINS", True)
        SECURE_HSTS_PRELOAD = env_bool("ANYJOB_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "jobs",
    "jobs.endpoints",
    "jobs.backends.local",
    "jobs.awsapi",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /aws (signed API calls) answered here, past the browser's middleware below (its docstring).
    "jobs.awsapi.middleware.ApiFrontDoorMiddleware",
    # Static files straight from the WSGI app (gunicorn has no static file server).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it answers a locked-out sign-in (webapp.signin.locked_out).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "jobs.context_processors.sandbox_banner",
            ],
        },
    },
]
WSGI_APPLICATION = "webapp.wsgi.application"

# SQLite under var/ by default; PostgreSQL (or any database) at team scale via DATABASE_URL.
# SQLite runs in WAL mode with immediate transactions, so the web server, the workers and
# the local backend's job processes can write side by side without "database is locked".
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'anyjob.sqlite3'}",
        conn_max_age=int(env_number("DATABASE_CONN_MAX_AGE", 0)),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT compilation: it pays off for long analytical queries, while a history page's
    # count over 100,000 rows then spends more time compiling (~50 ms) than running.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
    if "DATABASE_CONN_MAX_AGE" not in os.environ:
        # A PostgreSQL connection is a server process: starting one per request halves what
        # two cores serve (bench/team_load). Keep each thread's for a minute, checked first.
        DATABASES["default"]["CONN_MAX_AGE"] = 60
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("ANYJOB_STATIC_ROOT", str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# `make run` serves the files where they are (no collectstatic step); the image collects them
# into STATIC_ROOT, compressed, when it is built.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "history"
LOGOUT_REDIRECT_URL = "login"

# --- signing in (webapp/signin.py) ------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": int(env_number("ANYJOB_PASSWORD_MIN_LENGTH", 10, minimum=1))},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
#: django-axes first: it refuses a locked-out username or address before any password check.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Failed sign-ins are counted per username and, separately, per address; a success resets them.
AXES_FAILURE_LIMIT = int(env_number("ANYJOB_SIGNIN_FAILURES", 5, minimum=1))
AXES_COOLOFF_TIME = timedelta(minutes=env_number("ANYJOB_SIGNIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "webapp.signin.locked_out"
AXES_CLIENT_IP_CALLABLE = "webapp.signin.client_ip"
AXES_VERBOSE = False
#: Behind ANYJOB_PUBLIC_URL: how many proxies append to X-Forwarded-For (the client's address
#: is that many hops from the right).
ANYJOB_PROXY_COUNT = int(env_number("ANYJOB_PROXY_COUNT", 1, minimum=1))
#: Invitations: the one-time link to choose a password lasts this long.
ANYJOB_INVITE_DAYS = int(env_number("ANYJOB_INVITE_DAYS", 7, minimum=1))
PASSWORD_RESET_TIMEOUT = ANYJOB_INVITE_DAYS * 24 * 3600
# Mail for invitations (unset EMAIL_HOST: the admin copies the link from the page).
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = int(env_number("EMAIL_PORT", 587, minimum=1))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "anyjob@localhost")
# Single sign-on through OpenID Connect (mozilla-django-oidc), on when OIDC_RP_CLIENT_ID is set.
# The variables are the library's own settings, read from the environment.
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT")
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_CREATE_USER = env_bool("OIDC_CREATE_USER", True)
#: The name on the sign-in page's button ("Sign in with …").
ANYJOB_OIDC_NAME = env_str("ANYJOB_OIDC_NAME", "single sign-on")
if OIDC_RP_CLIENT_ID:
    AUTHENTICATION_BACKENDS.append("webapp.signin.TeamOIDCBackend")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("ANYJOB_LOG_LEVEL", "INFO")},
    # django-axes says a line at INFO for every sign-in; a failed one (WARNING) is what matters.
    "loggers": {"axes": {"level": "WARNING"}},
}

# --- Celery (webapp/celery.py reads every CELERY_* setting below) -------------------------
#: The embedded default is the private redis-server `make run` starts (webapp/run.py) on a unix
#: socket in var/: sandboxed jobs cannot see var/, while a TCP port on loopback would be
#: reachable from them. At team scale, REDIS_URL names any Redis (redis://host:6379/0).
ANYJOB_REDIS_SOCKET = VAR_DIR / "redis" / "redis.sock"
REDIS_URL = env_str("REDIS_URL", f"redis+socket://{ANYJOB_REDIS_SOCKET}")
CELERY_BROKER_URL = REDIS_URL
# Results are kept (for an hour) only for the callers that wait on one, such as the tests'
# round trip; the state of a job lives in the database, never in a task result.
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 3600
# JSON only: tasks take primary keys and plain values, never pickles.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Ack early. Tasks are short and none waits for a training job; on Redis a late-acked task
# that outlives visibility_timeout is delivered again and runs twice. Messages lost with a
# killed worker are re-sent from the database by the periodic sweep (DESIGN.md, "Data flow";
# it arrives with the dashboard's tasks), so broker_transport_options keep kombu's defaults:
# visibility_timeout 1 h, unacked_restore_interval 10 s. Keep any countdown/ETA under that
# hour, or kombu delivers the task a second time.
CELERY_TASK_ACKS_LATE = False
# Reserve one message per worker process at a time, so a slow task never holds others back.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The poller and the sweep; each message expires before the next one is due, so a backlog
# (a worker down for a while) never turns into a burst of stale polls.
CELERY_BEAT_SCHEDULE = {
    "poll-jobs": {"task": "jobs.poll_jobs", "schedule": 2.0, "options": {"expires": 1.5}},
    "poll-endpoints": {"task": "endpoints.poll", "schedule": 2.0, "options": {"expires": 1.5}},
    "sweep-pending": {"task": "jobs.sweep_pending", "schedule": 60.0, "options": {"expires": 50}},
    # The embedded S3: multipart uploads never completed are aborted (ANYJOB_S3_MULTIPART_MAX_AGE_HOURS).
    "s3-sweep-uploads": {"task": "awsapi.s3_sweep_uploads", "schedule": 3600.0, "options": {"expires": 3000}},
}
#: Task modules outside an app's tasks.py.
CELERY_IMPORTS = ["jobs.awsapi.s3_tasks"]

#: GET /healthz: a worker or beat silent for this long is down (they report every 2 s).
ANYJOB_HEALTH_STALE_SECONDS = int(env_number("ANYJOB_HEALTH_STALE_SECONDS", 20, minimum=1))

# --- anyjob ----------------------------------------------------------------------------
#: Where jobs run: "local" (the embedded SageMaker emulator) or "sagemaker" (AWS).
ANYJOB_BACKEND = env_str("ANYJOB_BACKEND", "local")
#: The region requests name (the local backend uses it in ARNs too).
ANYJOB_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
#: The generic training image every job runs (the code comes in sagemaker_submit_directory).
ANYJOB_TRAINING_IMAGE = env_str("ANYJOB_TRAINING_IMAGE", "anyjob/generic:latest")
#: The execution role jobs run as (the local backend accepts the placeholder).
ANYJOB_ROLE_ARN = env_str("ANYJOB_ROLE_ARN", "arn:aws:iam::000000000000:role/anyjob-local")
#: AWS only: a KMS key for the artifacts and the training volume, and the VPC jobs run in.
ANYJOB_KMS_KEY_ID = env_str("ANYJOB_KMS_KEY_ID")
ANYJOB_VPC_SUBNETS = env_list("ANYJOB_VPC_SUBNETS", [])
ANYJOB_VPC_SECURITY_GROUPS = env_list("ANYJOB_VPC_SECURITY_GROUPS", [])
#: Presigned artifact download links expire after this many seconds.
ANYJOB_DOWNLOAD_URL_SECONDS = int(env_number("ANYJOB_DOWNLOAD_URL_SECONDS", 300, minimum=1))
#: Default output path for artifacts (s3://bucket/prefix or file:///path).
ANYJOB_ARTIFACT_STORE = env_str("ANYJOB_ARTIFACT_STORE", (VAR_DIR / "artifacts").as_uri())
#: The embedded S3 (jobs/awsapi/s3_store.py, served at /aws): where its buckets live (under a
#: file:// artifact store, else var/s3), whether jobs.storage's s3:// URIs use it ("auto":
#: unless an S3 endpoint, the sagemaker backend or mapped roles say there is a real S3;
#: "embedded"; "aws"), and how long a multipart upload never completed is kept.
ANYJOB_S3 = env_str("ANYJOB_S3", "auto")
ANYJOB_S3_ROOT = Path(
    env_str(
        "ANYJOB_S3_ROOT",
        str(Path(unquote(ANYJOB_ARTIFACT_STORE[len("file://") :])) / "s3")
        if ANYJOB_ARTIFACT_STORE.startswith("file:///")
        else str(VAR_DIR / "s3"),
    )
).resolve()
ANYJOB_S3_MULTIPART_MAX_AGE_HOURS = env_number("ANYJOB_S3_MULTIPART_MAX_AGE_HOURS", 24, minimum=0.001)

#: The local backend: where job directories live, and its timings.
ANYJOB_LOCAL_ROOT = Path(env_str("ANYJOB_LOCAL_ROOT", str(VAR_DIR / "local-sagemaker"))).resolve()
#: Where the Python environment mirroring the container image is built (once).
ANYJOB_IMAGE_ENV_ROOT = Path(env_str("ANYJOB_IMAGE_ENV_ROOT", str(VAR_DIR / "image"))).resolve()
ANYJOB_LOCAL_STOP_GRACE_SECONDS = env_number("ANYJOB_LOCAL_STOP_GRACE_SECONDS", 120)
ANYJOB_LOCAL_HEARTBEAT_SECONDS = env_number("ANYJOB_LOCAL_HEARTBEAT_SECONDS", 2, minimum=0.1)
ANYJOB_LOCAL_HEARTBEAT_TIMEOUT = env_number("ANYJOB_LOCAL_HEARTBEAT_TIMEOUT", 30, minimum=1)
ANYJOB_LOCAL_MAX_LOG_EVENTS = int(env_number("ANYJOB_LOCAL_MAX_LOG_EVENTS", 100_000, minimum=100))
ANYJOB_LOCAL_MAX_CHANNEL_BYTES = int(env_number("ANYJOB_LOCAL_MAX_CHANNEL_BYTES", 50 * 1024**3, minimum=1))
#: Local endpoints: how long the model server may take to answer /ping with 200 before the
#: endpoint is Failed, and how long InvokeEndpoint waits for an answer (SageMaker's 60 s).
ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS = env_number("ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS", 120, minimum=1)
ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS = env_number("ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS", 60, minimum=0.1)
#: The machine's capacity: at most this many local instances run at once, training jobs and
#: endpoints together; one more is refused with ResourceLimitExceeded, as AWS refuses a request
#: past a quota. Default: one per core, at most one per 2 GiB of memory, at least one
#: (max(1, min(cores, memory_GiB // 2)), see jobs/backends/local/resources.py).
ANYJOB_LOCAL_MAX_INSTANCES = int(env_number("ANYJOB_LOCAL_MAX_INSTANCES", default_max_instances(), minimum=1))
#: At most this many processes (and threads) in one job or endpoint: a fork bomb stops there.
ANYJOB_LOCAL_MAX_PROCESSES = int(env_number("ANYJOB_LOCAL_MAX_PROCESSES", 1024, minimum=16))

#: Local jobs' execution roles: role ARN → credential source (an AWS profile or a key pair),
#: as JSON or the path of a JSON file (see jobs/backends/local/roles.py and the README,
#: "Security model"). Read and checked by a system check, never rendered; unset: no role has
#: credentials, so local jobs get none and may use file:// locations only.
ANYJOB_LOCAL_ROLES = env_str("ANYJOB_LOCAL_ROLES")
#: Error reports (the debug page, error e-mails) hide it like Django's own secrets.
DEFAULT_EXCEPTION_REPORTER_FILTER = "jobs.reporting.SafeSettingsFilter"

#: file:// channels and output paths of local jobs must lie under one of these folders, so a
#: channel cannot copy the dashboard's own state (var/: database, secret key) into a job.
ANYJOB_LOCAL_FILE_ROOTS = [
    Path(p).resolve()
    for p in env_list(
        "ANYJOB_LOCAL_FILE_ROOTS",
        [str(VAR_DIR / "data"), str(VAR_DIR / "artifacts"), str(BASE_DIR / "container" / "examples")],
    )
]

# --- the new-job form ----------------------------------------------------------------------
#: The instance type the form proposes, and the ones teammates may choose (empty: every type
#: the API accepts).
ANYJOB_DEFAULT_INSTANCE_TYPE = env_str("ANYJOB_DEFAULT_INSTANCE_TYPE", "ml.m5.large")
ANYJOB_INSTANCE_TYPES = env_list("ANYJOB_INSTANCE_TYPES", [])
#: The instance type the deploy form proposes for an endpoint.
ANYJOB_DEFAULT_SERVING_INSTANCE_TYPE = env_str("ANYJOB_DEFAULT_SERVING_INSTANCE_TYPE", "ml.m5.large")
#: Uploaded code: compressed size of one upload, size once unpacked, number of files.
ANYJOB_MAX_UPLOAD_BYTES = int(env_number("ANYJOB_MAX_UPLOAD_BYTES", 50 * 1024**2, minimum=1024))
ANYJOB_MAX_CODE_BYTES = int(env_number("ANYJOB_MAX_CODE_BYTES", 100 * 1024**2, minimum=1024))
ANYJOB_MAX_CODE_FILES = int(env_number("ANYJOB_MAX_CODE_FILES", 2000, minimum=1))
# A form with every row filled (100 hyperparameters, 100 variables, 50 tags, 20 channels).
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
# Form fields (files aside) read into memory: room for an invocation body typed up to SageMaker's
# 6 MiB and the form around it, so the form itself says when a body is over the limit. Past
# this, webapp.errors.bad_request answers with the limits instead of a bare 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = ANYJOB_MAX_CODE_FILES
