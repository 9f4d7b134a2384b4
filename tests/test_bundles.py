"""Code bundles: deterministic archives, stored once by sha256, unsafe names refused."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from jobs import bundles

FILES = {"train.py": b"print('hi')\n", "lib/util.py": b"X = 1\n", "run.sh": b"#!/bin/sh\n"}


def test_same_files_give_the_same_sha256_whatever_the_order() -> None:
    first = bundles.build(FILES)
    second = bundles.build(dict(reversed(list(FILES.items()))))
    assert first.data == second.data
    assert first.sha256 == second.sha256 == hashlib.sha256(first.data).hexdigest()
    assert bundles.build({**FILES, "train.py": b"print('bye')\n"}).sha256 != first.sha256


def test_members_are_normalised() -> None:
    with tarfile.open(fileobj=io.BytesIO(bundles.build(FILES).data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["lib/util.py", "run.sh", "train.py"]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
    assert {m.name: m.mode for m in members} == {"lib/util.py": 0o644, "run.sh": 0o755, "train.py": 0o644}


@pytest.mark.parametrize("name", ["../evil.py", "/etc/passwd", "a/../../b.py", "", "a//b.py", "./x.py"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(bundles.BundleError) as caught:
        bundles.build({name: b"x"})
    assert isinstance(caught.value, ValueError)


def test_a_file_cannot_also_be_a_folder() -> None:
    with pytest.raises(bundles.BundleError, match="is a file"):
        bundles.build({"a": b"x", "a/b.py": b"y"})


def test_stored_once_under_its_sha256(tmp_path) -> None:
    store = tmp_path.as_uri()
    bundle = bundles.build(FILES)
    uri = bundles.store(bundle, store)
    assert uri == f"{store}/code/{bundle.sha256}/sourcedir.tar.gz"
    path = tmp_path / "code" / bundle.sha256 / "sourcedir.tar.gz"
    assert path.read_bytes() == bundle.data
    before = path.stat().st_mtime_ns
    assert bundles.store(bundle, store) == uri
    assert path.stat().st_mtime_ns == before
