"""What a job's ``model.tar.gz`` and ``output.tar.gz`` hold, known without reading them.

A gzipped tar has no index: listing it means reading all of it. So each archive's manifest
(members, sizes, types; ``storage.Manifest``) is read at most once per stored object:

1. from the database (``ArtifactManifest``), keyed by the archive's URI and ``storage.head`` tag
   (S3's ETag): a page view costs one HEAD and one query, whatever the archive's size;
2. else from the manifest the local backend writes beside each archive when it packs it
   (``storage.upload_archive``), if it describes an archive of this size;
3. else (an AWS job, an older local job) from the archive itself, read once, here or in
   ``index_artifacts`` when the poller sees the job end.

Whatever was found is kept in the database. One member is read by streaming it out of the
archive (``storage.open_tar_member``), never holding it whole.
"""

from __future__ import annotations

import hashlib
import logging

from django.db import IntegrityError, transaction

from jobs import storage
from jobs.models import ArtifactManifest

log = logging.getLogger(__name__)


def manifest(uri: str) -> storage.Manifest:
    """The manifest of the archive at ``uri`` (see the module docstring); ``StorageError`` when
    the archive is missing or unreadable."""
    size, etag = storage.head(uri)
    key = hashlib.sha256(f"{uri}\0{etag}".encode()).hexdigest()
    row = ArtifactManifest.objects.filter(key=key).only("manifest").first()
    if row is not None:
        try:
            return storage.Manifest.from_dict(row.manifest)
        except storage.StorageError:
            ArtifactManifest.objects.filter(key=key).delete()
    found = storage.read_manifest(uri)
    if found is None or found.size != size:
        log.info("reading %s once for its manifest", uri)
        found = storage.compute_manifest(uri)
    try:
        with transaction.atomic():
            ArtifactManifest.objects.create(key=key, uri=uri, etag=etag, manifest=found.as_dict())
    except IntegrityError:  # another request computed it at the same time
        pass
    return found


def member(uri: str, name: str) -> storage.MemberInfo | None:
    """The manifest's entry for ``name`` (``./name`` too), or None when it lists none such."""
    wanted = name.removeprefix("./").rstrip("/")
    found = manifest(uri)
    for m in found.members:
        if m.name == wanted:
            return m
    return None
