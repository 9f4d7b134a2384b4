"""SDK v3's ``sm_drivers`` channel exactly as ``ModelTrainer.train`` prepares it, into a folder:
the SDK's ``container_drivers`` package, its ``install_requirements.py``, and the generated
``sm_train.sh``, ``sourcecode.json`` and ``distributed.json`` (by the SDK's own methods, so a
new SDK version's driver is what gets tested). Usage: ``sdk_v3_drivers.py OUT_DIR``."""

import json
import os
import shutil
import sys
from types import SimpleNamespace

import sagemaker.core.utils.install_requirements as install_requirements
from sagemaker.core.training.configs import SourceCode
from sagemaker.train.constants import SM_DRIVERS_LOCAL_PATH
from sagemaker.train.model_trainer import ModelTrainer

out = sys.argv[1]
shutil.copytree(SM_DRIVERS_LOCAL_PATH, out, ignore=shutil.ignore_patterns("__pycache__"))
shutil.copy2(install_requirements.__file__, os.path.join(out, "scripts", "install_requirements.py"))
source = SourceCode(source_dir=os.environ["ANYJOB_TEST_CODE"], entry_script="train.py")
folder = SimpleNamespace(name=out)  # what the SDK's methods take: a TemporaryDirectory
trainer = SimpleNamespace(hyperparameters={}, _jumpstart_config=None)  # the state they read
ModelTrainer._prepare_train_script(trainer, tmp_dir=folder, source_code=source, distributed=None)
ModelTrainer._write_source_code_json(trainer, tmp_dir=folder, source_code=source)
ModelTrainer._write_distributed_json(trainer, tmp_dir=folder, distributed=None)
print(json.dumps({"errors": {}, "files": sorted(os.listdir(out))}))
