"""The script the client tests train: a "model" that multiplies by ``--scale``.

``--mode ok`` trains and saves ``model.json`` and this folder's ``inference.py`` (so an
endpoint serves it with no SAGEMAKER_PROGRAM), ``fail`` exits with an error, ``sleep`` waits
(for stop and max-runtime tests). It prints ``epoch=N loss=X`` lines for the log tests.
"""

import argparse
import json
import os
import shutil
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="ok")
parser.add_argument("--scale", type=float, default=2.0)
args, _ = parser.parse_known_args()
print(f"training started: mode={args.mode} scale={args.scale}", flush=True)
for epoch in range(3):
    print(f"epoch={epoch} loss={1.0 / (epoch + 1):.3f}", flush=True)
if args.mode == "fail":
    sys.exit("the training script failed on purpose")
if args.mode == "sleep":
    print("sleeping until stopped", flush=True)
    time.sleep(3600)
model = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
with open(os.path.join(model, "model.json"), "w") as fh:
    json.dump({"scale": args.scale}, fh)
os.makedirs(os.path.join(model, "code"), exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
shutil.copy(os.path.join(here, "inference.py"), os.path.join(model, "code", "inference.py"))
print("training done", flush=True)
