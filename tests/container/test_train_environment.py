"""What the user script sees: argv, working directory and the SM_* environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyjob_container.environment import decode_value, render_arg, sm_hp_value, to_cmd_args
from tests.container.support import run_container, write_config

DUMP_SCRIPT = """
import json, os, sys
out = os.environ["SM_OUTPUT_DATA_DIR"]
with open(os.path.join(out, "seen.json"), "w") as fh:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}, fh)
"""

HYPERPARAMETERS = {
    "sagemaker_program": "dump.py",
    "sagemaker_submit_directory": "",  # set per test
    "sagemaker_region": '"us-east-1"',
    "sagemaker_job_name": '"job-7"',
    "sagemaker_container_log_level": "20",
    "_tuning_objective_metric": "loss",
    "sagemaker_custom_thing": "x",
    "epochs": "10",
    "optimizer": '"adam"',
    "raw-string": "adam",
    "learning-rate": "0.01",
    "use_gpu": "true",
    "Flag": "True",
    "nothing": "null",
    "k": "3",
    "config": '{"a": 1, "b": "x"}',
    "layers": "[64, 32]",
    "message": '"hello world"',
}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("env")
    code = root / "src"
    code.mkdir()
    (code / "dump.py").write_text(DUMP_SCRIPT)
    base = root / "ml"
    hps = {**HYPERPARAMETERS, "sagemaker_submit_directory": str(code)}
    write_config(base, hps, {"train": {"ContentType": "text/csv"}, "Eval-1": {}})
    result = run_container(base, extra_env={"TRAINING_JOB_NAME": "job-7", "MY_SETTING": "on"})
    assert result.returncode == 0, result.stderr
    data = json.loads((base / "output" / "data" / "seen.json").read_text())
    data["base"] = str(base)
    return data


def test_it_passes_user_hyperparameters_as_sorted_arguments(seen: dict) -> None:
    assert seen["argv"] == [
        "--Flag", "True",
        "--config", "a=1,b=x",
        "--epochs", "10",
        "-k", "3",
        "--layers", "[64, 32]",
        "--learning-rate", "0.01",
        "--message", "hello world",
        "--nothing", "",
        "--optimizer", "adam",
        "--raw-string", "adam",
        "--use_gpu", "True",
    ]  # fmt: skip


def test_it_runs_the_script_in_the_code_directory(seen: dict) -> None:
    assert seen["cwd"] == str(Path(seen["base"]) / "code")


def test_it_sets_the_paths_under_the_base_directory(seen: dict) -> None:
    env, base = seen["env"], seen["base"]
    assert env["SM_MODEL_DIR"] == f"{base}/model"
    assert env["SM_OUTPUT_DATA_DIR"] == f"{base}/output/data"
    assert env["SM_OUTPUT_DIR"] == f"{base}/output"
    assert env["SM_INPUT_DIR"] == f"{base}/input"
    assert env["SM_INPUT_CONFIG_DIR"] == f"{base}/input/config"
    assert env["SM_OUTPUT_INTERMEDIATE_DIR"] == f"{base}/output/intermediate"
    assert env["SM_CHANNEL_TRAIN"] == f"{base}/input/data/train"
    assert env["SM_CHANNEL_EVAL-1"] == f"{base}/input/data/Eval-1"


def test_it_lists_channels_sorted(seen: dict) -> None:
    assert seen["env"]["SM_CHANNELS"] == '["Eval-1","train"]'


def test_it_sets_hps_as_compact_sorted_json(seen: dict) -> None:
    assert json.loads(seen["env"]["SM_HPS"]) == {
        "Flag": "True",  # a raw boto3 string stays a string
        "config": {"a": 1, "b": "x"},
        "epochs": 10,
        "k": 3,
        "layers": [64, 32],
        "learning-rate": 0.01,
        "message": "hello world",
        "nothing": None,
        "optimizer": "adam",
        "raw-string": "adam",
        "use_gpu": True,
    }
    assert seen["env"]["SM_HPS"].startswith('{"Flag":"True","config":{"a":1,"b":"x"},"epochs":10,')


def test_it_sets_one_variable_per_hyperparameter(seen: dict) -> None:
    env = seen["env"]
    assert env["SM_HP_EPOCHS"] == "10"
    assert env["SM_HP_OPTIMIZER"] == "adam"
    assert env["SM_HP_RAW-STRING"] == "adam"
    assert env["SM_HP_LEARNING-RATE"] == "0.01"
    assert env["SM_HP_USE_GPU"] == "true"
    assert env["SM_HP_NOTHING"] == ""
    assert env["SM_HP_CONFIG"] == '{"a":1,"b":"x"}'
    assert env["SM_HP_LAYERS"] == "[64,32]"
    assert env["SM_HP_MESSAGE"] == "hello world"


def test_it_keeps_reserved_keys_from_the_script(seen: dict) -> None:
    env = seen["env"]
    assert not [k for k in env if k.startswith("SM_HP_SAGEMAKER") or k == "SM_HP__TUNING_OBJECTIVE_METRIC"]
    assert not [a for a in seen["argv"] if "sagemaker" in a or "tuning" in a]
    framework = json.loads(env["SM_FRAMEWORK_PARAMS"])
    assert framework["sagemaker_region"] == "us-east-1"
    assert framework["sagemaker_custom_thing"] == "x"


def test_it_describes_hosts_and_instance(seen: dict) -> None:
    env = seen["env"]
    assert env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_HOSTS"] == '["algo-1"]'
    assert env["SM_NETWORK_INTERFACE_NAME"] == "eth0"
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.large"
    assert env["SM_CURRENT_INSTANCE_GROUP"] == "homogeneousCluster"
    assert env["SM_CURRENT_INSTANCE_GROUP_HOSTS"] == '["algo-1"]'
    assert env["SM_INSTANCE_GROUPS"] == '["homogeneousCluster"]'
    assert env["SM_IS_HETERO"] == "false"
    assert int(env["SM_NUM_CPUS"]) >= 1
    assert env["SM_NUM_GPUS"] == "0"
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_USER_ENTRY_POINT"] == "dump.py"
    assert json.loads(env["SM_USER_ARGS"]) == seen["argv"]
    assert env["SM_MODULE_DIR"].endswith("/src")


def test_it_gives_the_whole_environment_as_one_object(seen: dict) -> None:
    te = json.loads(seen["env"]["SM_TRAINING_ENV"])
    assert te["master_hostname"] == "algo-1"
    assert te["is_master"] is True
    assert te["job_name"] == "job-7"
    assert te["hyperparameters"]["epochs"] == 10
    assert te["channel_input_dirs"]["train"] == seen["env"]["SM_CHANNEL_TRAIN"]
    assert te["input_data_config"]["train"]["ContentType"] == "text/csv"
    assert te["user_entry_point"] == "dump.py"


def test_it_passes_the_platform_environment_through(seen: dict) -> None:
    assert seen["env"]["TRAINING_JOB_NAME"] == "job-7"
    assert seen["env"]["MY_SETTING"] == "on"
    assert seen["env"]["PYTHONUNBUFFERED"] == "1"


def test_a_second_host_is_not_the_master(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "dump.py").write_text(DUMP_SCRIPT)
    base = tmp_path / "ml"
    resource = {"current_host": "algo-2", "hosts": ["algo-2", "algo-1"], "network_interface_name": "eth0"}
    write_config(
        base, {"sagemaker_program": "dump.py", "sagemaker_submit_directory": str(code)}, {}, resource
    )
    assert run_container(base).returncode == 0
    env = json.loads((base / "output" / "data" / "seen.json").read_text())["env"]
    te = json.loads(env["SM_TRAINING_ENV"])
    assert env["SM_HOSTS"] == '["algo-1","algo-2"]'
    assert (te["master_hostname"], te["is_master"]) == ("algo-1", False)


def test_the_program_variable_overrides_the_hyperparameter(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "dump.py").write_text(DUMP_SCRIPT)
    base = tmp_path / "ml"
    write_config(base, {"sagemaker_program": "missing.py", "sagemaker_submit_directory": str(code)})
    assert run_container(base, extra_env={"SAGEMAKER_PROGRAM": "dump.py"}).returncode == 0


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ('"adam"', "adam"),
        ("adam", "adam"),
        ("10", 10),
        ("0.5", 0.5),
        ("true", True),
        ("True", "True"),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("", ""),
        ("1e3", 1000.0),
        ("s3://bucket/key", "s3://bucket/key"),
    ],
)
def test_it_decodes_sdk_and_raw_values(raw: str, decoded: object) -> None:
    assert decode_value(raw) == decoded


@pytest.mark.parametrize(
    ("value", "arg", "env"),
    [
        (True, "True", "true"),
        (False, "False", "false"),
        (None, "", ""),
        ({"b": "x", "a": 1}, "a=1,b=x", '{"a":1,"b":"x"}'),
        ("two words", "two words", "two words"),
        (3, "3", "3"),
        ([1, "a"], "[1, 'a']", '[1,"a"]'),
        # Inside a dict each value is str()'d, not rendered again (the toolkit's to_cmd_args).
        (
            {"opt": {"eps": 1e-08}, "off": None},
            "off=None,opt={'eps': 1e-08}",
            '{"off":null,"opt":{"eps":1e-08}}',
        ),
        ({"on": True, "xs": [1, "a"], "s": "two words"}, "on=True,s=two words,xs=[1, 'a']", None),
    ],
)
def test_it_renders_values_for_argv_and_env(value: object, arg: str, env: str) -> None:
    assert render_arg(value) == arg
    if env is not None:
        assert sm_hp_value(value) == env


def test_a_nested_json_hyperparameter_reaches_the_script_as_the_toolkit_renders_it(tmp_path: Path) -> None:
    code = tmp_path / "src"
    code.mkdir()
    (code / "dump.py").write_text(DUMP_SCRIPT)
    base = tmp_path / "ml"
    hps = {
        "sagemaker_program": '"dump.py"',
        "sagemaker_submit_directory": json.dumps(str(code)),
        "hp": json.dumps({"opt": {"eps": 1e-08}, "off": None}),
    }
    write_config(base, hps, {})
    result = run_container(base)
    assert result.returncode == 0, result.stderr
    seen = json.loads((base / "output" / "data" / "seen.json").read_text())
    assert seen["argv"] == ["--hp", "off=None,opt={'eps': 1e-08}"]
    assert json.loads(seen["env"]["SM_HPS"]) == {"hp": {"off": None, "opt": {"eps": 1e-08}}}
    assert seen["env"]["SM_HP_HP"] == '{"off":null,"opt":{"eps":1e-08}}'


def test_one_letter_keys_get_one_dash() -> None:
    assert to_cmd_args({"b": 2, "a": 1, "alpha": "x"}) == ["-a", "1", "--alpha", "x", "-b", "2"]
