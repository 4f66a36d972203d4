"""egaku's job system: a persistent, fair, batching queue of generation jobs in front of the engine.

    from egaku.jobs import Service, JobSpec
    service = Service.create(auth=False); service.start()
    view = service.submit(service.authenticate(None), JobSpec("a red circle", steps=20))

Uses egaku.store (database, ledger, blobs) and egaku.engine; knows nothing of HTTP.
"""

from egaku.jobs.service import LOCAL_USER, Service
from egaku.jobs.settings import ServiceSettings
from egaku.jobs.types import (
    Event, Forbidden, ImageView, InsufficientCredits, JobSpec, JobStatus, JobView, NotFound, Principal,
    QuotaExceeded, RateLimited, Unauthorized,
)
from egaku.jobs.validate import UNIT_PIXELS_STEPS, cost_of

__all__ = [
    "Event", "Forbidden", "ImageView", "InsufficientCredits", "JobSpec", "JobStatus", "JobView", "LOCAL_USER",
    "NotFound", "Principal", "QuotaExceeded", "RateLimited", "Service", "ServiceSettings", "UNIT_PIXELS_STEPS",
    "Unauthorized", "cost_of",
]
