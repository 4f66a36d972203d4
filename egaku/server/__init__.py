"""egaku's HTTP server: FastAPI routes for the native job API, Stability REST v1, OpenAI Images and
AUTOMATIC1111's API, all clients of one `egaku.jobs.service.Service`. Build it with `create_app`."""

from egaku.server.app import create_app
from egaku.server.limits import ServerSettings

__all__ = ["create_app", "ServerSettings"]
