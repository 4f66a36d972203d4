"""The web studio: static HTML, CSS and ES modules served by `egaku serve` at `/` (no build step)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"  # index.html, studio.css, js/*.js
