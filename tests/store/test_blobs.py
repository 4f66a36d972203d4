"""Images on disk: named by their SHA-256, written once, never half-written."""

import hashlib

import pytest

from egaku.store import BlobStore, NotFound


def test_content_addressed_and_deduplicated(tmp_path):
    blobs = BlobStore(tmp_path / "images", ".png")
    data = b"\x89PNG fake bytes"
    digest = blobs.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = tmp_path / "images" / digest[:2] / f"{digest}.png"
    assert path.read_bytes() == data
    mtime = path.stat().st_mtime_ns
    assert blobs.put(data) == digest and path.stat().st_mtime_ns == mtime  # stored once
    assert blobs.get(digest) == data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    blobs.delete(digest)
    with pytest.raises(NotFound):
        blobs.get(digest)


def test_names_that_are_not_hashes_are_refused(tmp_path):
    blobs = BlobStore(tmp_path)
    with pytest.raises(NotFound):
        blobs.get("../../etc/passwd")
