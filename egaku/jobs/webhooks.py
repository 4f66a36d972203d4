"""Webhooks: when a job ends, POST its JobView JSON to the job's webhook_url, in a background thread.

Up to `tries` attempts with exponential backoff (backoff, 2*backoff, 4*backoff s); a 2xx answer is
delivered, anything else (an error status, a refused connection, a timeout) is retried. The outcome
("delivered" / "failed") and the number of attempts are recorded on the job. Deliveries still
pending when a process dies are sent again by the next Service.start().

A webhook is a request the server makes on a user's behalf, so by default it never reaches
loopback, private or link-local addresses (server-side request forgery): the URL's host is resolved,
every address must be public, and the connection goes to the address that was checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
from typing import Callable
from urllib.parse import urlsplit

from egaku.store.schema import WebhookState

log = logging.getLogger(__name__)


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local, CGNAT...)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, private_ok: bool) -> list[str]:
    """The addresses to connect to; every one must be public unless `private_ok` (a name that maps
    to an internal service is refused, not only a literal IP)."""
    addresses = list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
    if not private_ok:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise ValueError(f"{host} resolves to a private address ({private[0]}); webhooks to private "
                             "addresses are off (egaku serve --allow-private-webhooks)")
    return addresses


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    """A socket to the first of the checked `addresses` that answers (never a second DNS answer)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as e:
            error = e
    raise error


class _Pinned(http.client.HTTPConnection):
    """Connects to the addresses checked by resolve(), not to a later DNS answer (DNS rebinding)."""

    def __init__(self, host, port, addresses, timeout):
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self):
        self.sock = _connect(self.addresses, self.port, self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host, port, addresses, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.addresses = addresses

    def connect(self):
        sock = _connect(self.addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # the certificate names the host


def post_json(url: str, payload: dict, timeout: float, *, private_ok: bool = False) -> int:
    """POST `payload` as JSON; the HTTP status (raises OSError on network errors, ValueError on a
    private address). Redirects are not followed: a 3xx is an answer like any other non-2xx."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    addresses = resolve(parts.hostname, port, private_ok)
    connection = (_PinnedTLS if tls else _Pinned)(parts.hostname, port, addresses, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=json.dumps(payload).encode("utf-8"), headers={
            "Content-Type": "application/json", "User-Agent": "egaku-webhook/1"})
        return connection.getresponse().status
    finally:
        connection.close()


class WebhookSender:
    def __init__(self, record: Callable[[str, WebhookState, int], None], *, tries: int = 4,
                 backoff_s: float = 1.0, timeout_s: float = 10.0, private_ok: bool = False):
        self._record = record
        self.private_ok = private_ok
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
                    status = post_json(url, payload, self.timeout_s, private_ok=self.private_ok)
                    ok, why = 200 <= status < 300, f"HTTP {status}"
                except (OSError, ValueError, http.client.HTTPException) as e:  # network, private address, bad answer
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
