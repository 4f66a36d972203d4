"""Worker threads: claim jobs (a fair-order lead plus compatible ones), run the engine, store results.

A job's results are written in an order that survives a crash at any point:
  1. PNG bytes (with A1111's parameters chunk) into the content-addressed blob store;
  2. one transaction: image rows, settle the held credits, status succeeded.
A crash before 2 commits leaves the job `running` with its hold active; recovery re-queues it, and
re-written blobs cost nothing (same bytes, same name).
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from egaku.errors import EgakuError
from egaku.jobs.types import Event
from egaku.store.schema import Job, JobState

if TYPE_CHECKING:
    from egaku.jobs.service import Service

log = logging.getLogger(__name__)


def png_bytes(image, parameters: str | None = None) -> bytes:
    """A PNG of `image` with A1111's `parameters` text chunk (as egaku.engine.images.save_png writes)."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if parameters:
        info = PngInfo()
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@dataclass
class RunState:
    """A job this process is running: its cancel event and latest progress (what events and /progress show)."""

    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    user_cancelled: bool = False  # cancel asked by the user (else a cancel means the service is stopping)
    step: int = 0
    total: int = 0
    preview_png: bytes | None = None


class Worker(threading.Thread):
    def __init__(self, service: "Service", index: int):
        super().__init__(name=f"egaku-worker-{index}", daemon=True)
        self.service = service

    def run(self) -> None:
        svc = self.service
        while not svc._stopping.is_set():
            svc._wake.clear()
            try:
                jobs = svc.store.claim(svc.worker_id, max_batch=svc.max_batch,
                                       max_images=svc.settings.max_batch_images)
            except Exception:  # the database is away for a moment: try again shortly
                log.exception("claiming jobs")
                jobs = []
            if not jobs:
                svc._wake.wait(svc.settings.poll_s)
                continue
            try:
                self.run_batch(jobs)
            except Exception as e:  # a bug or the database failing mid-batch: fail what is left (refunded)
                log.exception("running jobs %s", [j.id for j in jobs])
                for job in jobs:
                    try:
                        if svc.store.finish_job(job.id, JobState.FAILED, error=f"internal error: {one_line(e)}",
                                                worker_id=svc.worker_id):
                            svc._finished(job.id)
                    except Exception:  # still failing: the job goes stale and recovery takes it
                        log.exception("failing job %s", job.id)

    # -- one claimed batch ---------------------------------------------------------------------------

    def run_batch(self, jobs: list[Job]) -> None:
        svc = self.service
        states = [RunState(job) for job in jobs]
        with svc._running_lock:
            for st in states:
                svc._running[st.job.id] = st
        try:
            for st in states:
                if st.job.cancel_requested:
                    st.user_cancelled = True
                    st.cancel.set()
                st.total = int(st.job.spec.get("steps", 0))
                svc._publish_status(st.job.id)
            # 1. build the engine requests (inputs decoded from the blob store)
            runnable: list[tuple[RunState, object]] = []
            for st in states:
                try:
                    runnable.append((st, self.build_request(st.job)))
                except EgakuError as e:
                    self.fail(st, one_line(e))
            if not runnable:
                return
            # 2. run them: one forward pass when the engine can batch them
            outcomes = self.generate(runnable)
            # 3. store each job's outcome
            for (st, _), outcome in zip(runnable, outcomes):
                self.finish(st, outcome)
        finally:
            with svc._running_lock:
                for st in states:
                    svc._running.pop(st.job.id, None)

    def build_request(self, job: Job):
        from egaku.engine.images import load_image
        from egaku.engine.request import GenerationRequest

        spec, blobs = job.spec, self.service.store.inputs
        init = mask = None
        if spec.get("_init_image"):
            init = load_image(blobs.get(spec["_init_image"]), mode="RGB", name="init image",
                              max_pixels=self.service.settings.max_input_pixels)
        if spec.get("_mask"):
            mask = load_image(blobs.get(spec["_mask"]), mode="L", name="mask",
                              max_pixels=self.service.settings.max_input_pixels)
        return GenerationRequest(
            prompt=spec["prompt"], negative_prompt=spec["negative_prompt"], model=spec["model"],
            sampler=spec["sampler"], steps=spec["steps"], cfg_scale=spec["cfg_scale"], seed=spec["seed"],
            cfg_rescale=spec.get("cfg_rescale", 0.0),  # jobs stored before CFG rescale: off
            width=spec["width"], height=spec["height"], batch_size=spec["n"], init_image=init,
            strength=spec["strength"], mask=mask, mask_blur=spec["mask_blur"],
            loras=[(d["name"], float(d["weight"])) for d in spec.get("loras") or []],  # jobs stored before LoRAs: none
        )

    def generate(self, runnable: list) -> list:
        """Each request's GenerationResult or the exception it raised, in order."""
        engine = self.service.engine
        requests = [request for _, request in runnable]
        progress = [self.progress_callback(st) for st, _ in runnable]
        cancels = [st.cancel for st, _ in runnable]
        if len(requests) > 1 and hasattr(engine, "generate_many"):
            try:
                return list(engine.generate_many(requests, progress=progress, cancel=cancels))
            except Exception as e:  # a bug or out of memory: the whole batch fails (refunded)
                log.exception("generate_many")
                return [e] * len(requests)
        outcomes = []
        for request, callback, cancel in zip(requests, progress, cancels):
            try:
                outcomes.append(engine.generate(request, progress=callback, cancel=cancel))
            except Exception as e:
                if not isinstance(e, EgakuError):
                    log.exception("generate")
                outcomes.append(e)
        return outcomes

    def progress_callback(self, st: RunState):
        svc = self.service

        def on_progress(event) -> None:
            st.step, st.total = int(event.step), int(event.total)
            preview = png_bytes(event.preview) if event.preview is not None else None
            if preview is not None:
                st.preview_png = preview
            svc.bus.publish(Event(st.job.id, "progress", {
                "step": st.step, "total": st.total, "image_index": int(event.image_index),
                "preview_png": preview}))

        return on_progress

    # -- outcomes ------------------------------------------------------------------------------------

    def finish(self, st: RunState, outcome) -> None:
        from egaku.engine.pipeline import GenerationCancelled

        svc = self.service
        if isinstance(outcome, GenerationCancelled) or (isinstance(outcome, Exception) and st.cancel.is_set()):
            if st.user_cancelled or not svc._stopping.is_set():
                self.end(st, JobState.CANCELLED, None)
            elif svc.store.requeue(st.job.id, svc.worker_id, refund_attempt=True):
                svc._publish_status(st.job.id)  # stopping: back to the queue for the next start
            return
        if isinstance(outcome, EgakuError):
            self.fail(st, one_line(outcome))
            return
        if isinstance(outcome, Exception):
            self.fail(st, f"internal error: {one_line(outcome)}")
            return
        self.succeed(st, outcome)

    def succeed(self, st: RunState, result) -> None:
        svc, spec = self.service, st.job.spec
        rows, pngs = [], []
        for image, seed, infotext in zip(result.images, result.seeds, result.infotexts):
            data = png_bytes(image, infotext)
            pngs.append(data)
            params = {k: v for k, v in spec.items() if not k.startswith("_") and k != "webhook_url"}
            params.update(seed=int(seed), width=image.width, height=image.height, sampler=result.request.sampler)
            rows.append(dict(sha256=svc.store.images.put(data), seed=int(seed), width=image.width,
                             height=image.height, infotext=infotext, params=params))
        if svc.store.complete_job(st.job.id, svc.worker_id, rows):
            for row, data in zip(rows, pngs):  # an image deleted meanwhile may have shared these bytes
                if not svc.store.images.exists(row["sha256"]):
                    svc.store.images.put(data)
            svc._finished(st.job.id)

    def fail(self, st: RunState, message: str) -> None:
        self.end(st, JobState.FAILED, message)

    def end(self, st: RunState, status: JobState, error: str | None) -> None:
        svc = self.service
        if svc.store.finish_job(st.job.id, status, error=error, worker_id=svc.worker_id):
            svc._finished(st.job.id)


__all__ = ["RunState", "Worker", "png_bytes"]
