"""The embedded S3's housekeeping task (beat runs it hourly: ``webapp/settings.py``)."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger("anyjob.s3")


@shared_task(name="awsapi.s3_sweep_uploads")
def s3_sweep_uploads() -> int:
    """Abort the multipart uploads older than ``ANYJOB_S3_MULTIPART_MAX_AGE_HOURS`` (S3's
    ``AbortIncompleteMultipartUpload`` lifecycle rule) and drop crashed writes' temporary
    files; returns how many uploads were aborted."""
    from jobs.awsapi import s3_store

    aborted = s3_store.store().sweep()
    if aborted:
        log.info("aborted %d multipart upload(s) never completed", aborted)
    return aborted
