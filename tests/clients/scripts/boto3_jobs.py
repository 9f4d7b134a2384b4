"""boto3: a failing job, a stopped one and one past its MaxRuntimeInSeconds, through the waiter."""

import sys
import time

import boto3
from botocore.exceptions import WaiterError
from common import code_bundle, done, found, step, training_request

bucket, prefix = sys.argv[1], sys.argv[2]
session = boto3.Session()
s3, sm = session.client("s3"), session.client("sagemaker")
fast = {"Delay": 1, "MaxAttempts": 180}
waiter = sm.get_waiter("training_job_completed_or_stopped")

with step("upload_code"):
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=code_bundle())

names = {"failing": f"{prefix}-fail", "stopped": f"{prefix}-stop", "timed_out": f"{prefix}-maxrt"}
with step("create"):
    sm.create_training_job(**training_request(names["failing"], bucket, mode="fail"))
    sm.create_training_job(**training_request(names["stopped"], bucket, mode="sleep"))
    timed_out = training_request(names["timed_out"], bucket, mode="sleep")
    timed_out["StoppingCondition"] = {"MaxRuntimeInSeconds": 3}
    sm.create_training_job(**timed_out)

with step("failing"):
    try:
        waiter.wait(TrainingJobName=names["failing"], WaiterConfig=fast)
        found["failing_waiter"] = "succeeded"
    except WaiterError as exc:
        found["failing_waiter"] = str(exc)
    job = sm.describe_training_job(TrainingJobName=names["failing"])
    found["failing"] = [job["TrainingJobStatus"], job.get("FailureReason", "")]

with step("stopped"):
    # Stop once the script is running (its log says so), as a person would.
    deadline = time.monotonic() + 120
    while sm.describe_training_job(TrainingJobName=names["stopped"])["SecondaryStatus"] != "Training":
        if time.monotonic() > deadline:
            raise TimeoutError("the job never reached Training")
        time.sleep(0.2)
    sm.stop_training_job(TrainingJobName=names["stopped"])
    found["stopping"] = sm.describe_training_job(TrainingJobName=names["stopped"])["TrainingJobStatus"]
    waiter.wait(TrainingJobName=names["stopped"], WaiterConfig=fast)
    job = sm.describe_training_job(TrainingJobName=names["stopped"])
    found["stopped"] = [job["TrainingJobStatus"], job["SecondaryStatus"]]

with step("timed_out"):
    waiter.wait(TrainingJobName=names["timed_out"], WaiterConfig=fast)
    job = sm.describe_training_job(TrainingJobName=names["timed_out"])
    found["timed_out"] = [job["TrainingJobStatus"], job["SecondaryStatus"]]

done()
