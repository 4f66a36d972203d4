"""A real egaku server on loopback (uvicorn in a thread, built-in model) and Debian's headless Chromium.

Shared by the studio's browser tests (tests/studio/conftest.py) and tests/studio/screenshots.py.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image

from egaku.jobs.service import Service
from egaku.jobs.settings import ServiceSettings
from egaku.jobs.types import JobSpec
from egaku.server.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`egaku serve` in-process: Service + create_app + uvicorn on 127.0.0.1:<free port>."""

    def __init__(self, home: Path, *, auth: bool = False, settings: ServiceSettings | None = None):
        self.service = Service.create(home=home, auth=auth, settings=settings)  # the app's lifespan starts it
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self.service), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="studio-test-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def local(self):
        """The Principal of the no-auth local user (or of an API key in auth mode)."""
        return self.service.authenticate(None)

    def make_job(self, principal, **spec) -> dict:
        """Run a job to the end through the service (fast setup for tests that start from an image)."""
        view = self.service.submit(principal, JobSpec(**spec))
        view = self.service.wait(principal, view.id, timeout=60)
        assert view.status == "succeeded", view.error
        return view

    def png(self, principal, image_id: str) -> bytes:
        return self.service.image_png(principal, image_id)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)  # the lifespan stops the service's workers
        self.service.close()


def expect(*args, **kwargs):
    """Playwright's retrying assertions, imported on use (so a machine without playwright can skip)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args, **kwargs)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def rgb(png: bytes) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def open_studio(page, url: str):
    """Load the studio and wait until it has asked the server who we are and filled the form."""
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    return page


# Read an <img>'s pixels in the page (what the user sees), as a flat RGBA list.
READ_PIXELS_JS = """(img) => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return {w: c.width, h: c.height, data: Array.from(ctx.getImageData(0, 0, c.width, c.height).data)};
}"""


def page_pixels(locator) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an <img> as the browser decoded it."""
    locator.evaluate("(img) => img.decode()")
    out = locator.evaluate(READ_PIXELS_JS)
    return np.array(out["data"], dtype=np.uint8).reshape(out["h"], out["w"], 4)[..., :3]
