"""The artifacts panel and one file's page read manifests, not archives: a page view costs no
archive bytes after the first, a member is streamed, older jobs without a manifest still work."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from jobs import storage, views
from jobs.backends import get_backend
from jobs.models import ArtifactManifest, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri() + "/"


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """How many times each URI was opened for reading through the storage layer."""
    counted: Counter = Counter()
    real = storage._open

    def counting(uri: str):
        counted[uri] += 1
        return real(uri)

    monkeypatch.setattr(storage, "_open", counting)
    return counted


def packed(tmp_path: Path, which: str, files: dict[str, bytes]) -> Path:
    src = tmp_path / f"src-{which}"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return storage.pack_dir(src, tmp_path / "packed" / which / f"{which}.tar.gz")


@pytest.fixture
def make_job(alice, tmp_path, store, monkeypatch):
    def make(*, with_manifest: bool = True, model_files=None) -> tuple[TrainingJob, dict[str, str]]:
        uris = {"model": store + "j/output/model.tar.gz", "output": store + "j/output/output.tar.gz"}
        contents = {
            "model": model_files or {"model.json": b'{"w": [1, 2]}', "weights.bin": b"\x00\x01" * 5000},
            "output": {"failure": b"ValueError: boom", "data/metrics.csv": b"epoch,loss\n1,0.5\n"},
        }
        for which, uri in uris.items():
            archive = packed(tmp_path, which, contents[which])
            (storage.upload_archive if with_manifest else storage.upload_file)(archive, uri)
        job = TrainingJob.objects.create(
            owner=alice,
            name="art-0001",
            entry_point="train.py",
            status="Completed",
            model_artifacts=uris["model"],
        )
        monkeypatch.setattr(type(get_backend()), "artifact_uri", lambda self, name, which: uris[which])
        return job, uris

    return make


def panel(client, job) -> str:
    response = client.get(f"/jobs/{job.name}/artifacts/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def test_packing_writes_a_manifest_beside_each_archive(make_job, alice, reads):
    _, uris = make_job()
    manifest = storage.read_manifest(uris["model"])
    assert manifest is not None and manifest.size == storage.size(uris["model"])
    assert [(m.name, m.size, m.kind) for m in manifest.members if not m.is_dir] == [
        ("model.json", 13, "file"),
        ("weights.bin", 10000, "file"),
    ]


def test_two_page_views_read_no_archive(client, alice, make_job, reads):
    job, uris = make_job()
    client.force_login(alice)
    reads.clear()
    first = panel(client, job)
    assert "model.json" in first and "weights.bin" in first and "data/metrics.csv" in first
    assert reads[uris["model"]] == reads[uris["output"]] == 0  # the manifests beside them
    assert reads[uris["model"] + storage.MANIFEST_SUFFIX] == 1
    reads.clear()
    assert panel(client, job) == first
    assert sum(reads.values()) == 0  # kept in the database: not even the manifest is read again


def test_an_older_job_without_a_manifest_is_read_once_then_kept(client, alice, make_job, reads):
    job, uris = make_job(with_manifest=False)
    client.force_login(alice)
    reads.clear()
    first = panel(client, job)
    assert "weights.bin" in first
    assert reads[uris["model"]] == reads[uris["output"]] == 1
    assert ArtifactManifest.objects.count() == 2
    reads.clear()
    assert panel(client, job) == first
    assert reads[uris["model"]] == reads[uris["output"]] == 0


def test_a_changed_archive_is_read_again(client, alice, make_job, reads, tmp_path):
    job, uris = make_job()
    client.force_login(alice)
    panel(client, job)
    # Replaced by an archive of another size: its old manifest beside it no longer fits.
    storage.upload_file(packed(tmp_path, "other", {"new.txt": b"fresh content"}), uris["model"])
    reads.clear()
    body = panel(client, job)
    assert "new.txt" in body and "weights.bin" not in body
    assert reads[uris["model"]] == 1


def test_one_member_is_streamed_and_a_missing_one_costs_nothing(client, alice, make_job, reads):
    job, uris = make_job()
    client.force_login(alice)
    panel(client, job)
    reads.clear()
    assert client.get(f"/jobs/{job.name}/artifacts/model/no-such-file").status_code == 404
    assert reads[uris["model"]] == 0
    download = client.get(f"/jobs/{job.name}/artifacts/model/weights.bin?download=1")
    assert download.status_code == 200 and download.streaming
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Length"] == "10000"
    assert b"".join(download.streaming_content) == b"\x00\x01" * 5000
    shown = client.get(f"/jobs/{job.name}/artifacts/output/data/metrics.csv")
    assert shown.status_code == 200 and "epoch,loss" in shown.content.decode()
    binary = client.get(f"/jobs/{job.name}/artifacts/model/weights.bin")  # NULs: downloaded
    assert binary.streaming and b"".join(binary.streaming_content) == b"\x00\x01" * 5000


def test_a_member_over_the_caps_is_refused_before_any_read(client, alice, make_job, reads, monkeypatch):
    job, uris = make_job()
    client.force_login(alice)
    panel(client, job)
    monkeypatch.setattr(views, "MAX_SHOWN_FILE", 100)
    monkeypatch.setattr(views, "MAX_MEMBER_DOWNLOAD", 5000)
    reads.clear()
    shown = client.get(f"/jobs/{job.name}/artifacts/model/weights.bin")
    assert shown.status_code == 413 and "download" in shown.content.decode()
    big = client.get(f"/jobs/{job.name}/artifacts/model/weights.bin?download=1")
    assert big.status_code == 413 and "model.tar.gz" in big.content.decode()
    assert reads[uris["model"]] == 0


def test_a_member_stream_reads_in_pieces(tmp_path, store):
    uri = store + "m.tar.gz"
    storage.upload_file(packed(tmp_path, "m", {"big.bin": bytes(range(256)) * 8192}), uri)
    with storage.open_tar_member(uri, "big.bin", 10**7) as member:
        assert member.size == 256 * 8192
        first = member.read(1000)
        assert first == bytes(range(256)) * 3 + bytes(range(232))
        rest = member.read()
    assert len(first) + len(rest) == 256 * 8192
    with pytest.raises(storage.TooLarge):
        storage.open_tar_member(uri, "big.bin", 10)
