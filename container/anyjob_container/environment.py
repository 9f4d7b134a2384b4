"""The training environment: config files, hyperparameter decoding and the ``SM_*`` variables.

Everything here is a pure function of the base directory's config files and the process
environment, so the same values reach the user script as argv, as ``SM_*`` variables and
inside ``SM_TRAINING_ENV``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidEntryPointError
from .paths import Layout

#: Set by anyjob's local backend when it fetched ``sagemaker_submit_directory`` itself.
STAGED_SUBMIT_DIRECTORY = "ANYJOB_STAGED_SUBMIT_DIRECTORY"
#: Keys the platform and the SDK use for themselves; never passed to the user script.
RESERVED_KEYS = frozenset(
    {
        "sagemaker_program",
        "sagemaker_submit_directory",
        "sagemaker_region",
        "sagemaker_job_name",
        "sagemaker_container_log_level",
        "sagemaker_enable_cloudwatch_metrics",
        "sagemaker_s3_output",
        "_tuning_objective_metric",
    }
)
ENTRY_POINT_RE = re.compile(r"[A-Za-z0-9._+/-]+")


def is_reserved(key: str) -> bool:
    return key in RESERVED_KEYS or key.startswith("sagemaker_")


def decode_value(raw: Any) -> Any:
    """One hyperparameter as the script should see it.

    The SDK JSON-encodes every value (``"\\"adam\\""``, ``"10"``, ``"true"``); plain boto3
    jobs carry raw strings (``"adam"``). Try JSON first and fall back to the raw string.
    """
    if not isinstance(raw, str):
        return raw  # a config file written by hand with real JSON types
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def render_arg(value: Any) -> str:
    """A decoded value as one argv element, as the toolkit's ``mapping.to_cmd_args`` renders
    it: ``str()`` of the value, ``null`` empty, and a dict as ``k=v`` pairs in key order joined
    by commas, each inner value ``str()`` too (not recursively: ``{"opt": {"eps": 1e-08},
    "off": null}`` → ``off=None,opt={'eps': 1e-08}``)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v!s}" for k, v in sorted(value.items()))
    return str(value)


def to_cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``--key value`` pairs in sorted key order; a one-letter key becomes ``-k``."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        args += [f"-{key}" if len(key) == 1 else f"--{key}", render_arg(hyperparameters[key])]
    return args


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def sm_hp_value(value: Any) -> str:
    """``SM_HP_<NAME>``: strings as they are, null empty, anything else compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return compact_json(value)


def env_name(name: str) -> str:
    return name.upper()


def read_json_config(path: Path, *, required: bool, default: Any) -> Any:
    """Read one platform config file; malformed JSON is a ``ConfigError`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path.name} is missing from {path.parent}") from None
        return default
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path.name}: {exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path.name} must hold a JSON object, not {type(value).__name__}")
    return value


def default_resource_config() -> dict[str, Any]:
    return {
        "current_host": "algo-1",
        "hosts": ["algo-1"],
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": ["algo-1"]}
        ],
        "network_interface_name": "eth0",
    }


def count_gpus() -> int:
    try:
        return sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return 0


def validate_entry_point(name: str) -> str:
    """Refuse entry points that could escape ``code/`` or be read as options."""
    if not name:
        raise InvalidEntryPointError("no entry point: set the sagemaker_program hyperparameter")
    if (
        not ENTRY_POINT_RE.fullmatch(name)
        or name.startswith(("/", "-"))
        or ".." in name.split("/")
        or name.endswith("/")
    ):
        raise InvalidEntryPointError(
            f"entry point {name!r} is not allowed: use a relative path of letters, digits and ._+/- "
            "without '..' and not starting with '/' or '-'"
        )
    return name


@dataclass
class TrainingEnv:
    """What the container knows about this training job, read once at start."""

    layout: Layout
    raw_hyperparameters: dict[str, Any]
    input_data_config: dict[str, Any]
    resource_config: dict[str, Any]
    environ: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, layout: Layout, environ: dict[str, str] | None = None) -> TrainingEnv:
        cfg = layout.config_dir
        hps = read_json_config(cfg / "hyperparameters.json", required=False, default={})
        data = read_json_config(cfg / "inputdataconfig.json", required=False, default={})
        resource = read_json_config(cfg / "resourceconfig.json", required=False, default=None)
        if resource is None:
            resource = default_resource_config()
        for name, channel in data.items():
            if not isinstance(channel, dict):
                raise ConfigError(f"inputdataconfig.json: channel {name!r} must be a JSON object")
        for key in ("current_host", "hosts"):
            if key not in resource:
                raise ConfigError(f"resourceconfig.json has no {key!r}")
        if not isinstance(resource["hosts"], list) or not resource["hosts"]:
            raise ConfigError("resourceconfig.json: 'hosts' must be a non-empty list")
        return cls(layout, hps, data, resource, dict(os.environ if environ is None else environ))

    # -- hyperparameters -------------------------------------------------------------------
    @property
    def decoded(self) -> dict[str, Any]:
        return {k: decode_value(v) for k, v in self.raw_hyperparameters.items()}

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The user's hyperparameters, decoded, reserved keys removed."""
        return {k: v for k, v in self.decoded.items() if not is_reserved(k)}

    def reserved(self, key: str, default: Any = None) -> Any:
        return self.decoded.get(key, default)

    @property
    def user_entry_point(self) -> str:
        # The toolkit's rule: the SAGEMAKER_PROGRAM variable overrides the hyperparameter.
        name = self.environ.get("SAGEMAKER_PROGRAM") or self.reserved("sagemaker_program") or ""
        return validate_entry_point(str(name))

    @property
    def submit_directory(self) -> str:
        value = self.reserved("sagemaker_submit_directory") or self.environ.get("SAGEMAKER_SUBMIT_DIRECTORY")
        return str(value or "")

    @property
    def code_source(self) -> str:
        """Where the code is fetched from: the copy of ``submit_directory`` anyjob's local
        backend staged (``ANYJOB_STAGED_SUBMIT_DIRECTORY``, a ``file://`` URI: an ``s3://``
        bundle of anyjob's embedded S3, which the sandbox cannot reach), else
        ``submit_directory`` itself."""
        return self.environ.get(STAGED_SUBMIT_DIRECTORY, "").strip() or self.submit_directory

    @property
    def region(self) -> str | None:
        value = self.reserved("sagemaker_region")
        return str(value) if value else None

    @property
    def job_name(self) -> str:
        return str(self.environ.get("TRAINING_JOB_NAME") or self.reserved("sagemaker_job_name") or "")

    @property
    def log_level(self) -> int:
        value = self.reserved("sagemaker_container_log_level", logging.INFO)
        try:
            return int(value)
        except (TypeError, ValueError):
            return logging.INFO

    # -- channels and hosts ----------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        return sorted(self.input_data_config)

    def check_channels(self) -> None:
        for name in self.channels:
            if not self.layout.channel_dir(name).is_dir():
                raise ConfigError(
                    f"channel {name!r} is listed in inputdataconfig.json but "
                    f"{self.layout.channel_dir(name)} does not exist"
                )

    @property
    def hosts(self) -> list[str]:
        return sorted(self.resource_config["hosts"])

    @property
    def current_host(self) -> str:
        return str(self.resource_config["current_host"])

    @property
    def instance_type(self) -> str:
        return str(self.resource_config.get("current_instance_type", "local"))

    @property
    def instance_groups(self) -> list[dict[str, Any]]:
        groups = self.resource_config.get("instance_groups")
        if groups:
            return groups
        return [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": self.instance_type,
                "hosts": self.hosts,
            }
        ]

    @property
    def current_group(self) -> dict[str, Any]:
        name = self.resource_config.get("current_group_name", "homogeneousCluster")
        for group in self.instance_groups:
            if group.get("instance_group_name") == name:
                return group
        return self.instance_groups[0]

    # -- what the script receives -----------------------------------------------------------
    def training_env(self, user_args: list[str]) -> dict[str, Any]:
        """The ``SM_TRAINING_ENV`` object; every other ``SM_*`` variable derives from it."""
        lay = self.layout
        hps = self.hyperparameters
        entry = self.user_entry_point
        groups = self.instance_groups
        current_group = self.current_group
        module_name = entry[:-3] if entry.endswith(".py") else entry
        return {
            "additional_framework_parameters": {k: v for k, v in self.decoded.items() if is_reserved(k)},
            "channel_input_dirs": {name: str(lay.channel_dir(name)) for name in self.channels},
            "current_host": self.current_host,
            "current_instance_group": current_group.get("instance_group_name", "homogeneousCluster"),
            "current_instance_group_hosts": current_group.get("hosts", self.hosts),
            "current_instance_type": self.instance_type,
            "distribution_hosts": [],
            "distribution_instance_groups": [],
            "framework_module": None,
            "hosts": self.hosts,
            "hyperparameters": hps,
            "input_config_dir": str(lay.config_dir),
            "input_data_config": self.input_data_config,
            "input_dir": str(lay.input_dir),
            "instance_groups": [g.get("instance_group_name") for g in groups],
            "instance_groups_dict": {g.get("instance_group_name"): g for g in groups},
            "is_hetero": len(groups) > 1,
            "is_master": self.current_host == self.hosts[0],
            "job_name": self.job_name,
            "log_level": self.log_level,
            "master_hostname": self.hosts[0],
            "model_dir": str(lay.model_dir),
            "module_dir": self.submit_directory,
            "module_name": module_name,
            "network_interface_name": self.resource_config.get("network_interface_name", "eth0"),
            "num_cpus": len(os.sched_getaffinity(0)),
            "num_gpus": count_gpus(),
            "output_data_dir": str(lay.output_data_dir),
            "output_dir": str(lay.output_dir),
            "output_intermediate_dir": str(lay.output_intermediate_dir),
            "resource_config": self.resource_config,
            "user_entry_point": entry,
            "user_args": user_args,
        }

    def script_environment(self, user_args: list[str]) -> dict[str, str]:
        """The user script's environment: the platform's, plus every ``SM_*`` variable."""
        te = self.training_env(user_args)
        env = dict(self.environ)
        sm = {
            "SM_MODEL_DIR": te["model_dir"],
            "SM_OUTPUT_DATA_DIR": te["output_data_dir"],
            "SM_OUTPUT_DIR": te["output_dir"],
            "SM_INPUT_DIR": te["input_dir"],
            "SM_INPUT_CONFIG_DIR": te["input_config_dir"],
            "SM_OUTPUT_INTERMEDIATE_DIR": te["output_intermediate_dir"],
            "SM_CHANNELS": json.dumps(self.channels, separators=(",", ":")),
            "SM_HPS": compact_json(te["hyperparameters"]),
            "SM_CURRENT_HOST": te["current_host"],
            "SM_HOSTS": json.dumps(te["hosts"], separators=(",", ":")),
            "SM_NETWORK_INTERFACE_NAME": te["network_interface_name"],
            "SM_CURRENT_INSTANCE_TYPE": te["current_instance_type"],
            "SM_CURRENT_INSTANCE_GROUP": te["current_instance_group"],
            "SM_CURRENT_INSTANCE_GROUP_HOSTS": json.dumps(
                te["current_instance_group_hosts"], separators=(",", ":")
            ),
            "SM_INSTANCE_GROUPS": json.dumps(te["instance_groups"], separators=(",", ":")),
            "SM_INSTANCE_GROUPS_DICT": compact_json(te["instance_groups_dict"]),
            "SM_IS_HETERO": json.dumps(te["is_hetero"]),
            "SM_NUM_CPUS": str(te["num_cpus"]),
            "SM_NUM_GPUS": str(te["num_gpus"]),
            "SM_LOG_LEVEL": str(te["log_level"]),
            "SM_USER_ENTRY_POINT": te["user_entry_point"],
            "SM_USER_ARGS": json.dumps(user_args, separators=(",", ":")),
            "SM_MODULE_NAME": te["module_name"],
            "SM_MODULE_DIR": te["module_dir"],
            "SM_FRAMEWORK_PARAMS": compact_json(te["additional_framework_parameters"]),
            "SM_FRAMEWORK_MODULE": "",
            "SM_RESOURCE_CONFIG": compact_json(te["resource_config"]),
            "SM_INPUT_DATA_CONFIG": compact_json(te["input_data_config"]),
            "SM_TRAINING_ENV": compact_json(te),
        }
        for name, path in te["channel_input_dirs"].items():
            sm[f"SM_CHANNEL_{env_name(name)}"] = path
        for key, value in te["hyperparameters"].items():
            sm[f"SM_HP_{env_name(key)}"] = sm_hp_value(value)
        env.update(sm)
        if self.job_name:
            env.setdefault("TRAINING_JOB_NAME", self.job_name)
        # Logs should stream as the script prints, not when a buffer fills.
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env
