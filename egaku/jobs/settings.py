"""The one settings object of the job service: limits, quotas, timings. Every field has a default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceSettings:
    # limits on what one job may ask for (the engine checks sizes, steps, CFG on top)
    max_n: int = 10  # images per job (Stability allows 1..10, OpenAI 1..10)
    max_prompt_chars: int = 4000  # prompt and negative prompt, each
    max_input_pixels: int = 4096 * 4096  # declared size of an init image or mask (decompression bombs)
    # quotas and rate limits (429 with Retry-After)
    max_user_jobs: int = 100  # queued + running jobs per user
    max_key_active: int = 16  # queued + running jobs per API key
    key_rpm: int = 120  # submits per minute per API key (a token bucket of this size, shared through the database)
    busy_retry_after_s: int = 5  # Retry-After when a quota or concurrency limit is hit
    # batching
    max_batch_images: int = 16  # images in one forward pass (engine's MAX_BATCH_SIZE)
    # crash recovery and liveness
    max_attempts: int = 3  # a job whose worker died this many times fails (refunded)
    heartbeat_s: float = 2.0  # running jobs are marked alive (and cancel requests polled) this often
    stale_after_s: float = 60.0  # a running job with no heartbeat this long is presumed orphaned
    poll_s: float = 1.0  # idle workers look for jobs (queued by other processes) this often
    cancel_wait_s: float = 5.0  # cancel() of a running job waits this long for it to stop
    # webhooks
    webhook_tries: int = 4
    webhook_backoff_s: float = 1.0  # waits 1, 2, 4 s between tries
    webhook_timeout_s: float = 10.0
    webhook_private_ok: bool = False  # allow webhooks to loopback / private / link-local addresses (trusted networks)
