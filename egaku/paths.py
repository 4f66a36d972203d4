"""Where egaku keeps its data: one variable, EGAKU_HOME, default ~/.egaku."""

from __future__ import annotations

import os
from pathlib import Path


def egaku_home() -> Path:
    """The data directory (models, database, images). Read at call time, never cached at import."""
    return Path(os.environ.get("EGAKU_HOME") or Path.home() / ".egaku").expanduser()


def models_dir() -> Path:
    return egaku_home() / "models"
