"""One SageMaker call, with the error it raised: ``boto3_call.py OPERATION JSON_PARAMS``
(``python_name`` of the operation, e.g. ``stop_training_job``). Optional env ``CALL_KEY_ID`` /
``CALL_SECRET`` sign with other keys, ``CALL_SERVICE`` picks another service."""

import json
import os
import sys

import boto3
from common import done, error_of, found

keys = {}
if os.environ.get("CALL_KEY_ID"):
    keys = {
        "aws_access_key_id": os.environ["CALL_KEY_ID"],
        "aws_secret_access_key": os.environ["CALL_SECRET"],
    }
client = boto3.client(os.environ.get("CALL_SERVICE", "sagemaker"), **keys)
operation, params = sys.argv[1], json.loads(sys.argv[2])
found["error"] = error_of(lambda: found.__setitem__("result", getattr(client, operation)(**params)))
done()
