"""The code of a job made through the API, registered as a dashboard code bundle.

SDK v2 (and plain boto3 code that follows it) names the code in the hyperparameter
``sagemaker_submit_directory``: a ``sourcedir.tar.gz`` it uploaded. SDK v3 sends it as the
input channel ``code`` instead (a prefix holding the files, or one archive), and names the
script in ``sm_drivers/sourcecode.json`` (``entry_script``). Either way the files are read with
the upload limits of the new-job form (``jobs.uploads``), bundled and stored by sha256
(``jobs.newjob.code_from_files``), so the job page lists and shows them and a clone starts from
them, exactly as for a form job.

This runs after the backend has the job (it never delays the job's start); code that cannot be
read is not an error of the request: the job runs, and the page says it has no bundle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anyjob_container.environment import decode_value
from jobs import storage, uploads
from jobs.newjob import code_from_files, upload_limits

log = logging.getLogger(__name__)

CODE_CHANNEL = "code"
DRIVERS_CHANNEL = "sm_drivers"
#: SDK v3's description of the script, in its drivers channel.
SOURCE_CODE_JSON = "sourcecode.json"


@dataclass(frozen=True)
class Registered:
    sha256: str
    #: Where the job's code is, for a deploy's ``SAGEMAKER_SUBMIT_DIRECTORY``.
    uri: str
    entry_point: str


def submit_directory(request: Mapping[str, Any]) -> str | None:
    value = decode_value((request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
    return value if isinstance(value, str) and "://" in value else None


def channel_uri(request: Mapping[str, Any], name: str) -> str | None:
    for channel in request.get("InputDataConfig") or []:
        if channel.get("ChannelName") == name:
            uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
            return uri if isinstance(uri, str) else None
    return None


def register(request: Mapping[str, Any], entry_point: str) -> Registered | None:
    """Store the request's code as a bundle; None when it names none anyjob can read."""
    limits = upload_limits()
    try:
        if uri := submit_directory(request):
            files = _archive(uri, limits)
            where = uri
        elif uri := channel_uri(request, CODE_CHANNEL):
            files = _prefix(uri, limits)
            where = ""
            entry_point = entry_point or _v3_entry_script(request)
        else:
            return None
        code = code_from_files(files)
    except (storage.StorageError, uploads.UploadError, OSError, ValueError) as exc:
        log.info("the code of training job %s is not kept: %s", request.get("TrainingJobName"), exc)
        return None
    if not entry_point:
        entry_point = uploads.default_entry_point(code.candidates)
    return Registered(code.sha256, where or code.uri, entry_point)


def _archive(uri: str, limits: uploads.Limits) -> dict[str, bytes]:
    data = storage.read_bytes(uri, limits.max_upload_bytes)
    return uploads.read_archive(uri.rsplit("/", 1)[-1] or "sourcedir.tar.gz", data, limits)


def _prefix(uri: str, limits: uploads.Limits) -> dict[str, bytes]:
    """The files under a channel's prefix (or the one archive it holds)."""
    objects = storage.list_prefix(uri, max_keys=limits.max_files + 1)
    if len(objects) > limits.max_files:
        raise uploads.UploadError(f"{uri} holds more than {limits.max_files} files.")
    if len(objects) == 1 and uploads.is_archive(objects[0].relative):
        return _archive(objects[0].uri, limits)
    total = sum(o.size for o in objects)
    if total > limits.max_code_bytes:
        raise uploads.UploadError(f"{uri} holds more than {limits.max_code_bytes} bytes of code.")
    return {o.relative: storage.read_bytes(o.uri, limits.max_code_bytes) for o in objects}


def _v3_entry_script(request: Mapping[str, Any]) -> str:
    uri = channel_uri(request, DRIVERS_CHANNEL)
    if not uri:
        return ""
    try:
        for found in storage.list_prefix(uri, max_keys=100):
            if found.relative.rsplit("/", 1)[-1] == SOURCE_CODE_JSON:
                described = json.loads(storage.read_bytes(found.uri, 64 * 1024))
                script = described.get("entry_script") if isinstance(described, dict) else None
                return script if isinstance(script, str) else ""
    except (storage.StorageError, ValueError) as exc:
        log.info("%s of %s cannot be read: %s", SOURCE_CODE_JSON, request.get("TrainingJobName"), exc)
    return ""
