"""Helpers for the server tests: a real egaku server on loopback (Service with the built-in model,
SQLite in a temp folder, create_app, uvicorn in a background thread), and test images."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class Live:
    url: str
    service: object
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[user]}"}

    def get(self, path: str, user: str | None = "alice", **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(user) if user else {}, timeout=120, **kw)

    def post(self, path: str, user: str | None = "alice", **kw) -> requests.Response:
        headers = {**(self.headers(user) if user else {}), **kw.pop("headers", {})}
        return requests.post(self.url + path, headers=headers, timeout=120, **kw)

    def wait_job(self, job_id: str, user: str = "alice", timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/api/v1/jobs/{job_id}", user).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.1)


def start_live(home: Path, *, settings=None, credits: dict[str, int] | None = None, server_settings=None,
               studio_dir=None, **service_kw):
    """(Live, LiveServer) for a fresh Service in `home`; users from `credits` (name -> credits)."""
    from egaku.jobs.service import Service
    from egaku.server import create_app

    service = Service.create(home=home, settings=settings, **service_kw)
    live = Live(url="", service=service)
    for name, amount in (credits or {}).items():
        service.add_user(name)
        live.keys[name] = service.create_key(name, label="test")[1]
        if amount:
            service.grant_credits(name, amount)
    server = LiveServer(create_app(service, settings=server_settings, studio_dir=studio_dir))
    live.url = server.start()
    return live, server


def png(color=(255, 0, 0), size=(128, 128), mode="RGB") -> bytes:
    """A solid-colour PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    data = png(size=(8, 8))
    ihdr = bytearray(data[8:33])  # length, b"IHDR", 13 bytes of header, CRC
    struct.pack_into(">II", ihdr, 8, width, height)
    struct.pack_into(">I", ihdr, 21, zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")
