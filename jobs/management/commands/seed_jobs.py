"""``manage.py seed_jobs``: a team's year of training jobs, for demos and benchmarks.

Creates ``--users`` accounts ``demo-user-1``… (unusable passwords; existing ones are reused)
and ``--count`` jobs named ``demo-<project>-<n>`` with what real jobs carry: hyperparameters
and channels per project, every status but Pending and Submitting (nothing the workers would
send: mostly Completed, some Failed with a failure reason and text, a few running ones created
in the last hours), ``SecondaryStatusTransitions`` with ISO
times, the ``CreateTrainingJob`` request as ``jobs.requests`` builds it, final metrics, clones.

The same ``--seed`` and ``--count`` give the same jobs. ``n`` numbers the jobs oldest first; a
number some ``demo-…-<n>`` job already has is skipped, so a re-run creates nothing and a larger
``--count`` adds the missing numbers (``seed_jobs --count 1000``, then ``--count 100000``).
A database that holds real (non-demo) jobs is refused unless ``--force``.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import accumulate
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.utils import timezone

from jobs.backends.local.states import MESSAGES
from jobs.bundles import uri_for
from jobs.models import TrainingJob, searchable_text
from jobs.requests import build_training_request

Status = TrainingJob.Status
NAME_PREFIX = "demo-"
#: Jobs still moving: they are created in the last hours (a job does not run for a year). None
#: is Pending or Submitting: the workers' sweep would send those to the backend. The poller
#: leaves the others alone (it describes only the jobs the backend lists).
ACTIVE = (Status.IN_PROGRESS, Status.STOPPING)
#: What the workers would act on: never seeded.
NEVER_SEEDED = (Status.PENDING, Status.SUBMITTING)
#: Share of each status among the jobs that are done (the rest of ``--count``).
DONE_MIX = {
    Status.COMPLETED: 0.765,
    Status.FAILED: 0.15,
    Status.STOPPED: 0.06,
    Status.SUBMIT_FAILED: 0.025,
}
#: Share of the jobs that are still moving, and how they split.
ACTIVE_SHARE = 0.002
ACTIVE_MIX = {Status.IN_PROGRESS: 0.8, Status.STOPPING: 0.2}
YEAR = timedelta(days=365)


@dataclass(frozen=True)
class Project:
    """What a team's jobs of one kind look like."""

    slug: str
    weight: float
    entry_point: str
    instance_types: tuple[str, ...]
    #: (key, type, values): a value is picked per job.
    hyperparameters: tuple[tuple[str, str, tuple[str, ...]], ...]
    #: (name, uri, content_type, input_mode); ``{v}`` in the uri is a dataset version.
    channels: tuple[tuple[str, str, str, str], ...]
    #: Typical training time, seconds (a job takes 0.3× to 3× of it).
    train_seconds: int
    max_runtime_seconds: tuple[int, ...] = (3600, 7200, 86400)
    volume_size_gb: tuple[int, ...] = (5, 30)
    metric: str = "train:loss"
    output_path: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics its jobs define: the losses, and the one the project is judged on."""
        return tuple(dict.fromkeys(("train:loss", "validation:loss", self.metric)))


PROJECTS = (
    Project(
        "iris",
        3,
        "train.py",
        ("ml.m5.large", "ml.t3.medium"),
        (
            ("epochs", "number", ("50", "100", "200", "500")),
            ("learning-rate", "number", ("0.1", "0.05", "0.01", "0.001")),
            ("l2", "number", ("0", "0.0001", "0.001")),
        ),
        (("train", "s3://anyjob-demo-data/iris/{v}/train.csv", "text/csv", "File"),),
        90,
        max_runtime_seconds=(600, 3600),
        volume_size_gb=(1,),
    ),
    Project(
        "mnist",
        3,
        "mnist.py",
        ("ml.m5.xlarge", "ml.c5.2xlarge", "ml.g4dn.xlarge"),
        (
            ("epochs", "number", ("5", "10", "20", "30")),
            ("batch-size", "number", ("32", "64", "128", "256")),
            ("lr", "number", ("0.1", "0.01", "0.001")),
            ("optimizer", "string", ("adam", "sgd", "adamw")),
        ),
        (
            ("train", "s3://anyjob-demo-data/mnist/{v}/train/", "application/x-npy", "File"),
            ("test", "s3://anyjob-demo-data/mnist/{v}/test/", "application/x-npy", "File"),
        ),
        900,
    ),
    Project(
        "resnet50",
        2,
        "train_resnet.py",
        ("ml.p3.2xlarge", "ml.g5.2xlarge", "ml.g5.12xlarge"),
        (
            ("epochs", "number", ("30", "60", "90")),
            ("batch-size", "number", ("128", "256", "512")),
            ("lr", "number", ("0.1", "0.4", "1.6")),
            ("momentum", "number", ("0.9",)),
            ("augment", "boolean", ("true", "false")),
            ("mixed-precision", "boolean", ("true",)),
        ),
        (
            ("train", "s3://imagenet-bucket/ilsvrc2012/{v}/train/", "application/x-image", "FastFile"),
            ("validation", "s3://imagenet-bucket/ilsvrc2012/{v}/val/", "application/x-image", "FastFile"),
        ),
        6 * 3600,
        max_runtime_seconds=(86400, 172800),
        volume_size_gb=(200, 500),
        metric="validation:top1",
        output_path="s3://anyjob-vision-models/resnet50",
        tags=(("team", "vision"),),
    ),
    Project(
        "bert-finetune",
        2,
        "finetune.py",
        ("ml.g5.xlarge", "ml.g5.2xlarge", "ml.p3.2xlarge"),
        (
            ("model-name", "string", ("bert-base-uncased", "distilbert-base-uncased", "roberta-base")),
            ("max-seq-length", "number", ("128", "256", "512")),
            ("epochs", "number", ("2", "3", "4")),
            ("learning-rate", "number", ("2e-05", "3e-05", "5e-05")),
            (
                "scheduler",
                "json",
                ('{"name":"linear","warmup_steps":500}', '{"name":"cosine","warmup_ratio":0.06}'),
            ),
        ),
        (
            ("train", "s3://anyjob-nlp/reviews/{v}/train.jsonl", "application/jsonlines", "File"),
            ("validation", "s3://anyjob-nlp/reviews/{v}/valid.jsonl", "application/jsonlines", "File"),
        ),
        2 * 3600,
        max_runtime_seconds=(14400, 43200),
        volume_size_gb=(50,),
        metric="eval:f1",
        tags=(("team", "nlp"),),
    ),
    Project(
        "xgb-churn",
        4,
        "xgb_train.py",
        ("ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge"),
        (
            ("max-depth", "number", ("4", "6", "8", "10")),
            ("eta", "number", ("0.05", "0.1", "0.2", "0.3")),
            ("num-round", "number", ("100", "200", "500", "1000")),
            ("objective", "string", ("binary:logistic",)),
            ("subsample", "number", ("0.7", "0.8", "1.0")),
        ),
        (
            ("train", "s3://anyjob-analytics/churn/{v}/train.csv", "text/csv", "File"),
            ("validation", "s3://anyjob-analytics/churn/{v}/validation.csv", "text/csv", "File"),
        ),
        600,
        metric="validation:auc",
        tags=(("team", "analytics"), ("cost-center", "cc-4711")),
    ),
    Project(
        "forecast",
        3,
        "forecast.py",
        ("ml.c5.xlarge", "ml.c5.4xlarge"),
        (
            ("horizon", "number", ("7", "14", "28")),
            ("freq", "string", ("D", "H", "W")),
            ("seasonality", "json", ('{"weekly":true,"yearly":true}', '{"weekly":true,"yearly":false}')),
            ("holidays", "string", ("US", "DE", "FR")),
        ),
        (("train", "s3://anyjob-analytics/sales/{v}/", "text/csv", "File"),),
        1800,
        tags=(("team", "analytics"),),
    ),
    Project(
        "yolo-detect",
        1,
        "detect.py",
        ("ml.g5.2xlarge", "ml.g5.12xlarge"),
        (
            ("img-size", "number", ("640", "1280")),
            ("epochs", "number", ("100", "300")),
            ("batch", "number", ("16", "32", "64")),
            ("weights", "string", ("yolov8n.pt", "yolov8s.pt", "yolov8m.pt")),
        ),
        (
            ("train", "s3://anyjob-vision/coco/{v}/train2017/", "application/x-image", "FastFile"),
            ("val", "s3://anyjob-vision/coco/{v}/val2017/", "application/x-image", "FastFile"),
        ),
        4 * 3600,
        max_runtime_seconds=(86400,),
        volume_size_gb=(100,),
        metric="metrics:mAP50",
        output_path="s3://anyjob-vision-models/yolo",
        tags=(("team", "vision"),),
    ),
    Project(
        "sentiment",
        2,
        "run.sh",
        ("ml.m5.large", "ml.m5.xlarge"),
        (
            ("vocab-size", "number", ("20000", "50000")),
            ("ngrams", "number", ("1", "2", "3")),
            ("lowercase", "boolean", ("true", "false")),
        ),
        (("train", "s3://anyjob-nlp/tweets/{v}/", "text/csv", "File"),),
        300,
        volume_size_gb=(5,),
    ),
)
VERSIONS = ("2024-11", "2025-01", "2025-03", "2025-06", "2025-09", "v1", "v2", "v3")

#: (failure reason, full failure text) templates; ``{…}`` filled per job.
ALGORITHM_FAILURES = (
    (
        "ModuleNotFoundError: No module named '{module}'",
        'Traceback (most recent call last):\n  File "/opt/ml/code/{entry}", line 3, in <module>\n'
        "    import {module}\nModuleNotFoundError: No module named '{module}'",
    ),
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        'Traceback (most recent call last):\n  File "/opt/ml/code/{entry}", line 212, in <module>\n'
        '    main()\n  File "/opt/ml/code/{entry}", line 187, in main\n    loss.backward()\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 22.20 GiB total"
        " capacity; 19.87 GiB already allocated)",
    ),
    (
        "KeyError: '{key}'",
        'Traceback (most recent call last):\n  File "/opt/ml/code/{entry}", line 58, in <module>\n'
        "    args = parse(hp['{key}'])\nKeyError: '{key}'",
    ),
    (
        "ValueError: Input contains NaN, infinity or a value too large for dtype('float32').",
        'Traceback (most recent call last):\n  File "/opt/ml/code/{entry}", line 97, in train\n'
        "    model.fit(x, y)\nValueError: Input contains NaN, infinity or a value too large for"
        " dtype('float32').",
    ),
    (
        "FileNotFoundError: [Errno 2] No such file or directory: '/opt/ml/input/data/train/part-0.csv'",
        'Traceback (most recent call last):\n  File "/opt/ml/code/{entry}", line 31, in load\n'
        "    return open(path).read()\nFileNotFoundError: [Errno 2] No such file or directory:"
        " '/opt/ml/input/data/train/part-0.csv'",
    ),
)
SUBMIT_ERRORS = (
    "ValidationException: 1 validation error detected: Value '2592000' at "
    "'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value "
    "less than or equal to 2419200",
    "ResourceLimitExceeded: The account-level service limit 'ml.p3.2xlarge for training job usage' is 4"
    " Instances, with current utilization of 4 Instances and a request delta of 1 Instances.",
    "the code bundle {source} is missing: upload the code again",
    "ThrottlingException: Rate exceeded",
)


class Command(BaseCommand):
    help = "Create demo users and COUNT training jobs with a realistic history (deterministic per --seed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, required=True, help="demo jobs wanted (numbers 1…COUNT)")
        parser.add_argument("--users", type=int, default=25, help="demo users to spread them over")
        parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same jobs")
        parser.add_argument("--batch", type=int, default=5000, help="jobs per INSERT batch and transaction")
        parser.add_argument(
            "--force", action="store_true", help="seed even though the database holds real (non-demo) jobs"
        )

    def handle(
        self, *args, count: int, users: int, seed: int, batch: int, force: bool = False, **options
    ) -> None:
        if count < 0 or users < 1 or batch < 1:
            raise CommandError("--count must be ≥ 0, --users and --batch ≥ 1")
        real = TrainingJob.objects.exclude(name__startswith=NAME_PREFIX)
        if not force and real.exists():
            raise CommandError(
                f"This database holds {real.count()} real jobs (not {NAME_PREFIX}…): seed_jobs would put "
                "made-up jobs among them, in the same history. Seed an empty database (ANYJOB_VAR_DIR "
                "or DATABASE_URL elsewhere), or pass --force to seed this one anyway."
            )
        started = time.monotonic()
        owners = _ensure_users(users)
        now = timezone.now()
        plan = _plan(random.Random(seed), count, now)  # noqa: S311 - demo data, deterministic
        taken = set(TrainingJob.objects.filter(name__startswith=NAME_PREFIX).values_list("name", flat=True))
        numbers = {int(tail) for tail in (name.rsplit("-", 1)[-1] for name in taken) if tail.isdigit()}
        maker = _JobMaker(seed, owners, now)
        writer = _Writer(connections[DEFAULT_DB_ALIAS])
        created = skipped = 0
        for start in range(0, count, batch):
            rows = []
            for n, (created_at, status, project) in enumerate(plan[start : start + batch], start + 1):
                name = f"{NAME_PREFIX}{project.slug}-{n}"
                if n in numbers or name in taken:
                    skipped += 1
                else:
                    rows.append(maker.make(n, name, project, status, created_at))
            writer.insert(rows)
            _insert_series(rows)
            created += len(rows)
            if options["verbosity"] >= 2:
                self.stdout.write(f"  {min(start + batch, count)} / {count}")
        writer.link_parents(maker.clones)
        self.stdout.write(
            f"seed_jobs: {created} jobs created, {skipped} already there, {len(owners)} users,"
            f" {time.monotonic() - started:.1f} s"
        )


class _Writer:
    """Inserts rows (dicts by attname) with one prepared ``INSERT`` per batch.

    ``bulk_create`` costs about 0.3 ms a row on SQLite (each value goes through the SQL
    compiler, 24 rows a statement under SQLite's 999 parameters), more than making the row.
    Values are adapted as the model fields do it (``connection.ops.adapt_json_value`` and
    ``adapt_datetimefield_value``), so any backend gets what the ORM would send; ``created_at``
    is stored as given (``auto_now_add`` would overwrite it).
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        ops = connection.ops
        meta = TrainingJob._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key and not getattr(f, "generated", False)]
        self.columns: list[tuple[str, Any, Any]] = []  # (attname, default, adapter or None)
        for f in fields:
            adapter = None
            if isinstance(f, models.JSONField):
                adapter = partial(ops.adapt_json_value, encoder=f.encoder)
            elif isinstance(f, models.DateTimeField):
                adapter = ops.adapt_datetimefield_value
            self.columns.append((f.attname, f.get_default(), adapter))
        qn = ops.quote_name
        self.table = qn(meta.db_table)
        columns = ", ".join(qn(f.column) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        # Identifiers from the model's own metadata, quoted by the backend; values are parameters.
        self.sql = f"INSERT INTO {self.table} ({columns}) VALUES ({marks})"  # noqa: S608

    def insert(self, rows: list[dict[str, Any]]) -> None:
        values = []
        for row in rows:
            line = []
            for name, default, adapter in self.columns:
                value = row.get(name, default)
                line.append(value if adapter is None or value is None else adapter(value))
            values.append(line)
        with transaction.atomic(using=self.connection.alias), self.connection.cursor() as cursor:
            cursor.executemany(self.sql, values)

    def link_parents(self, clones: list[tuple[str, str]]) -> None:
        """Point each clone (name) at its parent (name), now that both have ids."""
        qn, meta = self.connection.ops.quote_name, TrainingJob._meta
        parent, pk, name = (qn(meta.get_field(f).column) for f in ("parent", "id", "name"))
        sql = (
            f"UPDATE {self.table} SET {parent} = (SELECT p.{pk} FROM {self.table} p WHERE p.{name} = %s)"  # noqa: S608
            f" WHERE {name} = %s"
        )
        with transaction.atomic(using=self.connection.alias), self.connection.cursor() as cursor:
            cursor.executemany(sql, [(parent, name) for name, parent in clones])


def _ensure_users(count: int) -> list[int]:
    """The ids of ``demo-user-1``…``demo-user-<count>``, created where missing."""
    user_model = get_user_model()
    names = [f"demo-user-{i}" for i in range(1, count + 1)]
    have = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create(
        [
            user_model(username=name, email=f"{name}@example.com", password=make_password(None))
            for name in names
            if name not in have
        ]
    )
    ids = dict(user_model.objects.filter(username__in=names).values_list("username", "pk"))
    return [ids[name] for name in names]


def _plan(rng: random.Random, count: int, now: datetime) -> list[tuple[datetime, str, Project]]:
    """(created_at, status, project) of every job, oldest first.

    Every status appears once the count allows; the running ones are recent, the others are
    spread over the last year, more of them lately (the team grew).
    """
    statuses = [s for s in Status.values if s not in NEVER_SEEDED][:count]
    active = max(0, round(count * ACTIVE_SHARE) - len(ACTIVE))
    statuses += rng.choices(list(ACTIVE_MIX), weights=list(ACTIVE_MIX.values()), k=min(active, count))
    statuses += rng.choices(list(DONE_MIX), weights=list(DONE_MIX.values()), k=count - len(statuses))
    weights = list(accumulate(p.weight for p in PROJECTS))
    plan = []
    for status in statuses:
        if status == Status.PENDING or status == Status.SUBMITTING:
            age = timedelta(seconds=rng.uniform(1, 300))
        elif status in ACTIVE:
            age = timedelta(seconds=rng.uniform(600, 6 * 3600))
        else:
            # Density grows linearly towards now; finished jobs end before now (see _JobMaker).
            age = YEAR * (1 - rng.random() ** 0.5) + timedelta(hours=2)
        plan.append((now - age, status, rng.choices(PROJECTS, cum_weights=weights)[0]))
    plan.sort(key=lambda item: item[0])
    return plan


class _JobMaker:
    """One job's row (field attname → value); each job's details come from its own seeded RNG."""

    def __init__(self, seed: int, owners: list[int], now: datetime) -> None:
        self.seed = seed
        self.now = now
        self.owners = owners
        # A few people run most of the jobs.
        self.owner_weights = list(accumulate(1 / (i + 1) ** 0.8 for i in range(len(owners))))
        #: The newest job names per project, and (clone, parent) names.
        self.recent: dict[str, list[str]] = {}
        self.clones: list[tuple[str, str]] = []
        self.store = settings.ANYJOB_ARTIFACT_STORE.rstrip("/")
        self.request_settings = {
            "image": settings.ANYJOB_TRAINING_IMAGE,
            "role_arn": settings.ANYJOB_ROLE_ARN,
            "region": settings.ANYJOB_REGION,
            "default_output_path": f"{self.store}/output",
        }
        self.code_versions: dict[tuple[str, int], str] = {}

    def make(self, n: int, name: str, p: Project, status: str, created_at: datetime) -> dict[str, Any]:
        rng = random.Random(self.seed * 1_000_003 + n)  # noqa: S311 - demo data, deterministic
        version = rng.choice(VERSIONS)
        code = (p.slug, rng.randrange(30))  # a project's code changes now and then
        if code not in self.code_versions:
            self.code_versions[code] = hashlib.sha256(f"{self.seed}-{code}".encode()).hexdigest()
        source_sha = self.code_versions[code]
        job = SimpleNamespace(
            owner_id=rng.choices(self.owners, cum_weights=self.owner_weights)[0],
            name=name,
            entry_point=p.entry_point,
            source_sha256=source_sha,
            source_uri=uri_for(source_sha, self.store),
            hyperparameters=[
                {"key": key, "value": rng.choice(values), "type": kind}
                for key, kind, values in p.hyperparameters
            ],
            channels=[
                {"name": ch, "uri": uri.format(v=version), "content_type": ctype, "input_mode": mode}
                for ch, uri, ctype, mode in p.channels
            ],
            instance_type=rng.choice(p.instance_types),
            instance_count=1,
            volume_size_gb=rng.choice(p.volume_size_gb),
            max_runtime_seconds=rng.choice(p.max_runtime_seconds),
            output_path=p.output_path,
            environment={"WANDB_MODE": "offline"} if rng.random() < 0.2 else {},
            tags=[{"key": k, "value": v} for k, v in p.tags],
            metric_definitions=[{"name": m, "regex": metric_regex(m)} for m in p.metric_names],
            network_isolation=rng.random() < 0.1,
            status=status,
            created_at=created_at,
            updated_at=created_at,
        )
        job.search_text = searchable_text(name, job.hyperparameters, job.channels)
        recent = self.recent.setdefault(p.slug, [])
        if recent and rng.random() < 0.08:
            self.clones.append((name, rng.choice(recent)))
        recent.append(name)
        del recent[:-50]
        if status != Status.PENDING:
            job.request = build_training_request(job, code_uri=job.source_uri, **self.request_settings)
            job.submitted_at = job.updated_at = created_at + timedelta(seconds=rng.uniform(0.2, 3))
            if status == Status.SUBMIT_FAILED:
                job.error = rng.choice(SUBMIT_ERRORS).format(source=job.source_uri)
            elif status != Status.SUBMITTING:
                self._run(rng, job, p)
        return vars(job)

    def _run(self, rng: random.Random, job: SimpleNamespace, p: Project) -> None:
        """Transitions, times, failure, metrics and artifacts of a job the backend accepted."""
        status = job.status
        starting, downloading = rng.uniform(60, 300), rng.uniform(5, 600)
        training = min(p.train_seconds * rng.uniform(0.3, 3), job.max_runtime_seconds)
        steps = [("Starting", starting), ("Downloading", downloading), ("Training", training)]
        final, reason, text = "", "", ""
        if status == Status.COMPLETED:
            steps.append(("Uploading", rng.uniform(5, 90)))
            final = "Completed"
        elif status == Status.FAILED:
            final = "Failed"
            if rng.random() < 0.15:  # the data never arrived
                del steps[2:]
                reason = f"ClientError: no objects under {job.channels[0]['uri']}"
            else:
                steps[2] = ("Training", training * rng.uniform(0.01, 0.9))
                reason, text = self._script_failure(rng, job, p)
        elif status == Status.STOPPED:
            if rng.random() < 0.25:
                steps[2] = ("Training", float(job.max_runtime_seconds))
                final = "MaxRuntimeExceeded"
            else:
                steps[2] = ("Training", training * rng.uniform(0.05, 0.8))
                final = "Stopped"
            steps.append(("Stopping", rng.uniform(5, 60)))
        else:  # InProgress, Stopping: as far as the job's age allows, the last step lasting
            elapsed = (self.now - job.submitted_at).total_seconds()
            while len(steps) > 1 and sum(s for _, s in steps[:-1]) > elapsed:
                steps.pop()
            if status == Status.STOPPING:
                steps.append(("Stopping", 0.0))
        at = job.submitted_at + timedelta(seconds=rng.uniform(0.3, 2))
        if final:
            # A finished job ended before now: a recent one ran shorter (created two hours ago
            # at least, see _plan).
            room = (self.now - at).total_seconds() - 60
            total = sum(s for _, s in steps)
            if total > room:
                steps = [(secondary, seconds * room / total) for secondary, seconds in steps]
                final = "Stopped" if final == "MaxRuntimeExceeded" else final
        job.creation_time = at
        transitions = []
        for secondary, seconds in steps:
            end = at + timedelta(seconds=seconds)
            transitions.append(
                {
                    "Status": secondary,
                    "StartTime": at.isoformat(),
                    "EndTime": end.isoformat(),
                    "StatusMessage": MESSAGES[secondary],
                }
            )
            at = end
        if final:
            message = MESSAGES[final] + (f". Reason: {reason}" if reason else "")
            stamp = at.isoformat()
            transitions.append(
                {"Status": final, "StartTime": stamp, "EndTime": stamp, "StatusMessage": message}
            )
        else:
            del transitions[-1]["EndTime"]  # the current step lasts
        job.transitions = transitions
        job.secondary_status = transitions[-1]["Status"]
        job.last_modified = job.updated_at = datetime.fromisoformat(transitions[-1]["StartTime"])
        if len(transitions) > 1:
            job.training_start_time = datetime.fromisoformat(transitions[1]["StartTime"])
        if not final:
            return
        job.training_end_time = at
        job.training_start_time = getattr(job, "training_start_time", None) or at
        job.billable_seconds = int((at - job.training_start_time).total_seconds())
        job.failure_reason = reason[:1024]
        job.failure_text = text
        if len(steps) > 2:
            output = (job.output_path or f"{self.store}/output").rstrip("/")
            job.model_artifacts = f"{output}/{job.name}/output/model.tar.gz"
        if status == Status.COMPLETED:
            value = round(rng.uniform(0.05, 0.99), 4)
            job.final_metrics = [{"MetricName": p.metric, "Value": value, "Timestamp": at.isoformat()}]
        job.metric_series = _series(random.Random(f"{self.seed}-{job.name}-metrics"), job, p)  # noqa: S311

    @staticmethod
    def _script_failure(rng: random.Random, job: SimpleNamespace, p: Project) -> tuple[str, str]:
        """``FailureReason`` and the full failure file of a script that raised."""
        short, full = rng.choice(ALGORITHM_FAILURES)
        fill = {
            "module": rng.choice(("transformers", "xgboost", "sklearn", "prophet", "ultralytics")),
            "entry": job.entry_point,
            "key": p.hyperparameters[0][0],
        }
        header = f'ExecuteUserScriptError:\nExitCode 1\nCommand "{_command(job)}"'
        text = f"{header}\nErrorMessage:\n{full.format(**fill)}"
        return f"AlgorithmError: {header}\n[...]\n{short.format(**fill)}", text


def metric_regex(name: str) -> str:
    """A seeded job's regex for ``name``: ``name=value``, exponent included (the new-job form's
    preset, ``jobs.metric_tester``)."""
    return rf"{re.escape(name)}=([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"


def _series(rng: random.Random, job: SimpleNamespace, p: Project) -> list[dict[str, Any]]:
    """The ``MetricSeries`` rows of a job that trained (none for one that never started): a
    loss falls from its maximum towards its minimum and ends a little above it; a score (auc,
    f1, top1, mAP50) rises. A job stopped early has fewer points."""
    start = getattr(job, "training_start_time", None)
    if start is None:
        return []
    end = getattr(job, "training_end_time", None) or job.last_modified
    first_ms = int(start.timestamp() * 1000)
    last_ms = max(first_ms, int(end.timestamp() * 1000))
    final = {m["MetricName"]: m["Value"] for m in getattr(job, "final_metrics", None) or []}
    out = []
    for name in p.metric_names:
        count = rng.randint(5, 2000)
        if name.endswith("loss"):
            low = round(rng.uniform(0.02, 1.2) * (1.3 if name.startswith("validation") else 1), 5)
            high = round(low * rng.uniform(2, 12), 5)
            last = final.get(name, round(low * rng.uniform(1.0, 1.15), 5))
        else:
            last = final.get(name, round(rng.uniform(0.3, 0.99), 4))
            high = round(min(1.0, last * rng.uniform(1.0, 1.05)), 4)
            low = round(last * rng.uniform(0.05, 0.5), 4)
        low, high = min(low, last), max(high, last)
        out.append(
            {
                "name": name,
                "count": count,
                "last": last,
                "min": low,
                "max": high,
                "first_ms": first_ms,
                "last_ms": last_ms,
            }
        )
    return out


def _insert_series(rows: list[dict[str, Any]]) -> None:
    """The batch's metric series, now that its jobs have ids (``bulk_create``)."""
    from jobs.models import MetricSeries

    wanted = {row["name"]: row["metric_series"] for row in rows if row.get("metric_series")}
    if not wanted:
        return
    ids = dict(TrainingJob.objects.filter(name__in=list(wanted)).values_list("name", "pk"))
    MetricSeries.objects.bulk_create(
        [MetricSeries(job_id=ids[name], **series) for name, items in wanted.items() for series in items],
        batch_size=2000,
    )


def _command(job: SimpleNamespace) -> str:
    args = [f"--{hp['key']} {hp['value']}" for hp in sorted(job.hyperparameters, key=lambda hp: hp["key"])]
    runner = "/bin/sh -c ./" if job.entry_point.endswith(".sh") else "/usr/local/bin/python "
    return f"{runner}{job.entry_point} {' '.join(args)}"
