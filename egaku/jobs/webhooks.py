"""Webhooks: when a job ends, POST its JobView JSON to the job's webhook_url, in a background thread.

Up to `tries` attempts with exponential backoff (backoff, 2*backoff, 4*backoff s); a 2xx answer is
delivered, anything else (an error status, a refused connection, a timeout) is retried. The outcome
("delivered" / "failed") and the number of attempts are recorded on the job. Deliveries still
pending when a process dies are sent again by the next Service.start().
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Callable

from egaku.store.schema import WebhookState

log = logging.getLogger(__name__)


def post_json(url: str, payload: dict, timeout: float) -> int:
    """POST `payload` as JSON; the HTTP status (raises OSError on network errors)."""
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "egaku-webhook/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


class WebhookSender:
    def __init__(self, record: Callable[[str, WebhookState, int], None], *, tries: int = 4,
                 backoff_s: float = 1.0, timeout_s: float = 10.0):
        self._record = record
        self.tries = tries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def send(self, job_id: str, url: str, payload: dict) -> None:
        """Deliver in the background; after stop() nothing is sent (it stays pending for the next start)."""
        if self._stop.is_set():
            return
        thread = threading.Thread(target=self._deliver, args=(job_id, url, payload),
                                  name=f"egaku-webhook-{job_id[-6:]}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _deliver(self, job_id: str, url: str, payload: dict) -> None:
        try:
            for attempt in range(1, self.tries + 1):
                try:
                    status = post_json(url, payload, self.timeout_s)
                    ok, why = 200 <= status < 300, f"HTTP {status}"
                except (OSError, ValueError) as e:
                    ok, why = False, " ".join(str(e).split()) or type(e).__name__
                if ok:
                    self._record(job_id, WebhookState.DELIVERED, attempt)
                    return
                log.info("webhook for job %s, try %d of %d: %s", job_id, attempt, self.tries, why)
                if attempt < self.tries and self._stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                    return  # stopping: stays pending, the next start sends it
            self._record(job_id, WebhookState.FAILED, self.tries)
        except Exception:  # the store went away mid-shutdown: the delivery stays pending
            log.exception("webhook for job %s", job_id)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def resume(self) -> None:
        self._stop.clear()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def idle(self) -> bool:
        with self._lock:
            return not self._threads
