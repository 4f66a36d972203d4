"""Content-addressed files: `root/<sha256[:2]>/<sha256><suffix>`, written atomically, stored once.

Identical bytes share one file (the name is their SHA-256), so writing the same image twice (a job
re-run after a crash) costs nothing. Writes go to a temporary file in the same folder, then
os.replace, so a reader sees the whole file or none.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from egaku.store.errors import NotFound

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Files named by the SHA-256 of their bytes under `root` (e.g. home/images, suffix ".png")."""

    def __init__(self, root: Path, suffix: str = ""):
        self.root = Path(root)
        self.suffix = suffix

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise NotFound(f"no blob {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}{self.suffix}"

    def put(self, data: bytes) -> str:
        """Store `data` (once) and return its SHA-256 hex."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{digest[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {sha256[:12]} is missing from {self.root}") from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
