"""Per-job publish/subscribe between worker threads and any number of listeners (SSE streams, wait()).

Thread-safe. A subscription buffers events; when a slow listener's buffer is full, the oldest
*progress* event is dropped (previews are only worth the latest one), never a status or done event.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

from egaku.jobs.types import Event

MAX_BUFFERED = 256


class Subscription:
    """Events of one job for one listener: `get(timeout)` -> Event | None; `close()` when done."""

    def __init__(self, bus: "EventBus", job_id: str):
        self.job_id = job_id
        self._bus = bus
        self._events: deque[Event] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, event: Event) -> None:
        with self._cond:
            if self.closed:
                return
            if len(self._events) >= MAX_BUFFERED:
                for i, old in enumerate(self._events):
                    if old.kind == "progress":
                        del self._events[i]
                        break
                else:
                    if event.kind == "progress":
                        return
            self._events.append(event)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds (or at once when closed and drained)."""
        with self._cond:
            if not self._events and not self.closed:
                self._cond.wait(timeout)
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._bus._remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventBus:
    def __init__(self):
        self._subs: dict[str, list[Subscription]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(self, job_id)
        with self._lock:
            self._subs[job_id].append(sub)
        return sub

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs.get(event.job_id, ()))
        for sub in subs:
            sub.put(event)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._subs[sub.job_id]

    def listeners(self, job_id: str) -> int:
        with self._lock:
            return len(self._subs.get(job_id, ()))
