"""Webhooks: the JobView JSON is POSTed when a job ends, retried with backoff, and the outcome recorded."""

import json
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from jobkit import tiny, user_with_key

from egaku.errors import InvalidRequestError
from egaku.jobs import ServiceSettings
from egaku.jobs.webhooks import post_json


class Receiver:
    """A real HTTP server on loopback that answers the first `failures` POSTs with 500."""

    def __init__(self, failures: int, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        self.failures = failures
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if len(receiver.statuses) < receiver.failures else 200
                receiver.bodies.append(body)
                receiver.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.server.server_address[1]}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(failures):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _wait_webhook(service, job_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.store.get_job(job_id)
        if job.webhook_state in ("delivered", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"webhook still {job.webhook_state} after {timeout} s")


def test_webhook_is_retried_until_delivered(make_service, receiver_factory):
    receiver = receiver_factory(failures=1)
    service = make_service(settings=ServiceSettings(webhook_backoff_s=0.1, poll_s=0.2, webhook_private_ok=True))
    principal, _ = user_with_key(service, "alice", credits=10)
    service.start()
    view = service.submit(principal, tiny(webhook_url=receiver.url))
    done = service.wait(principal, view.id, timeout=60)
    job = _wait_webhook(service, view.id)
    assert (job.webhook_state, job.webhook_attempts) == ("delivered", 2)
    assert receiver.statuses == [500, 200]
    body = receiver.bodies[-1]
    assert body["id"] == view.id and body["status"] == "succeeded"
    assert [i["id"] for i in body["images"]] == [i.id for i in done.images]
    assert body["params"]["prompt"] == "a red circle"


def test_webhook_gives_up_after_four_tries_and_cancel_also_notifies(make_service, receiver_factory):
    receiver = receiver_factory(failures=100)
    service = make_service(settings=ServiceSettings(webhook_backoff_s=0.05, webhook_private_ok=True))
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(webhook_url=receiver.url))
    service.cancel(principal, view.id)  # never started: cancelled jobs are reported too
    job = _wait_webhook(service, view.id)
    assert (job.webhook_state, job.webhook_attempts) == ("failed", 4)
    assert receiver.statuses == [500] * 4
    assert {b["status"] for b in receiver.bodies} == {"cancelled"}


def test_a_webhook_pending_at_a_crash_is_sent_on_start(make_service, receiver_factory):
    receiver = receiver_factory(failures=0)
    service = make_service(settings=ServiceSettings(poll_s=0.2, webhook_private_ok=True))
    principal, _ = user_with_key(service, "alice", credits=10)
    view = service.submit(principal, tiny(webhook_url=receiver.url))
    service.stop()  # its sender stops: as if the process died right after the job ended
    service.cancel(principal, view.id)
    time.sleep(0.3)
    assert service.store.get_job(view.id).webhook_state == "pending" and receiver.bodies == []
    make_service(settings=ServiceSettings(webhook_backoff_s=0.05, webhook_private_ok=True)).start()
    job = _wait_webhook(service, view.id)
    assert job.webhook_state == "delivered" and receiver.bodies[0]["status"] == "cancelled"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/x", "https://10.1.2.3/",
                                 "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/", "http://[::ffff:192.168.0.1]/",
                                 "http://app.localhost./"])
def test_webhooks_to_private_addresses_are_refused_by_default(make_service, url):
    service = make_service()
    principal, _ = user_with_key(service, "alice", credits=10)
    with pytest.raises(InvalidRequestError, match=r"^webhook_url points at a private address .*--allow-private-webhooks\)$"):
        service.submit(principal, tiny(webhook_url=url))
    assert service.balance(principal) == 10 and service.list_jobs(principal) == []  # nothing held or queued


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(receiver_factory):
    """A public-looking name can still point inside: the resolved addresses are checked, then pinned."""
    receiver = receiver_factory(failures=0)
    port = receiver.server.server_address[1]
    with pytest.raises(ValueError, match=r"^localhost resolves to a private address \((127\.0\.0\.1|::1)\)"):
        post_json(f"http://localhost:{port}/hook", {"id": "x"}, timeout=5)
    assert receiver.bodies == []
    assert post_json(f"http://localhost:{port}/hook", {"id": "x"}, timeout=5, private_ok=True) == 200
    assert receiver.bodies == [{"id": "x"}]


def _self_signed(folder, name: str) -> tuple[str, str]:
    """A self-signed certificate for host `name` and its key (PEM files), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_https_webhooks_are_pinned_and_still_check_the_certificate_for_the_host(tmp_path, monkeypatch):
    """An https webhook connects to the address it checked, over real TLS, and verifies that the
    certificate names the URL's host: a trusted certificate for another name is refused."""
    right, wrong = _self_signed(tmp_path, "localhost"), _self_signed(tmp_path, "example.org")
    trusted = tmp_path / "trusted.pem"
    trusted.write_text(open(right[0]).read() + open(wrong[0]).read())
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))  # what ssl.create_default_context() trusts
    receivers = []
    for cert, key in (right, wrong):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        receivers.append(Receiver(0, tls=context, host="localhost"))
    try:
        assert post_json(receivers[0].url, {"id": "job-1"}, 10, private_ok=True) == 200
        assert receivers[0].bodies == [{"id": "job-1"}]
        with pytest.raises(ssl.SSLCertVerificationError, match="example.org|match"):
            post_json(receivers[1].url, {"id": "job-2"}, 10, private_ok=True)
        assert receivers[1].bodies == []
    finally:
        for r in receivers:
            r.close()
