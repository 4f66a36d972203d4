"""Rows -> the views clients see (JobView, ImageView)."""

from __future__ import annotations

from egaku.jobs.types import ImageView, JobStatus, JobView
from egaku.jobs.validate import public_spec
from egaku.store.ids import iso
from egaku.store.schema import Image, Job


def image_view(image: Image) -> ImageView:
    return ImageView(id=image.id, job_id=image.job_id, seed=int(image.seed), width=image.width,
                     height=image.height, sha256=image.sha256, created_at=iso(image.created_at),
                     infotext=image.infotext)


def job_view(job: Job, *, position: int | None, progress: dict | None, images: list[Image]) -> JobView:
    status = JobStatus(job.status)
    return JobView(
        id=job.id,
        status=status,
        spec=public_spec(job.spec),
        cost=int(job.cost),
        position=position if status is JobStatus.QUEUED else None,
        progress=progress if status is JobStatus.RUNNING else None,
        error=job.error,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        images=[image_view(i) for i in images] if status is JobStatus.SUCCEEDED else [],
        user_id=job.user_id,
    )
