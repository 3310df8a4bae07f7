"""Webhook deliveries to a real HTTP receiver on 127.0.0.1, verified as a receiver would.

The receiver checks every request with the ``standardwebhooks`` package; the worker's
rounds (service/domain/delivery.py) run in this process against the test database.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from service.config import WebhookSettings
from service.domain.delivery import Deliverer
from tests.helpers import create_location

FAST_RETRIES = WebhookSettings(
    allow_private_targets=True, retry_base_s=0.01, retry_max_delay_s=0.05, timeout_s=5
)


class Receiver:
    """An HTTP server that answers ``status`` (a list consumed per request, then 204)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, dict]] = []
        self.answers: list[int] = []
        self.secret: str | None = None
        self.verified = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answers.pop(0) if receiver.answers else 204
                if status < 300:
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    Webhook(receiver.secret).verify(body, headers)  # raises if forged
                    receiver.verified += 1
                    receiver.received.append((headers, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    running = Receiver()
    yield running
    running.close()


def register(client, app, url: str) -> dict:
    app.app.extensions["storekeeper.webhooks"] = FAST_RETRIES
    response = client.post("/api/v1/webhooks", json={"url": url})
    assert response.status_code == 201, response.text
    return response.json()


def drain(deliverer: Deliverer, done, timeout_s: float = 20.0) -> None:
    """Worker rounds until ``done()`` (or fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "deliveries did not finish in time"
        if not deliverer.run_once():
            time.sleep(0.02)


def test_a_receiver_down_for_a_while_gets_every_event_once_in_order(
    client, app, database, receiver
):
    endpoint = register(client, app, receiver.url)
    receiver.secret = endpoint["secret"]
    receiver.answers = [503, 503, 500, 503]  # down for the first four requests
    for index in range(6):
        create_location(client, code=f"WH-{index}")
    deliverer = Deliverer(database, FAST_RETRIES, concurrency=4)
    try:
        drain(deliverer, lambda: receiver.verified >= 6)
        for _ in range(5):  # nothing more arrives
            deliverer.run_once()
    finally:
        deliverer.close()
    feed = client.get("/api/v1/events").json()["items"]
    by_id = {}
    for headers, body in receiver.received:
        assert headers["webhook-id"] == body["id"]
        by_id.setdefault(body["id"], body)
    delivered = [body["sequence"] for body in by_id.values()]
    assert delivered == [event["sequence"] for event in feed]  # all, in order, once
    assert [body["data"] for body in by_id.values()] == [event["data"] for event in feed]
    deliveries = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["items"]
    assert {d["status"] for d in deliveries} == {"succeeded"}
    assert sum(len(d["attempts"]) for d in deliveries) == len(feed) + 4


def test_410_disables_the_endpoint_with_a_reason(client, app, database, receiver):
    endpoint = register(client, app, receiver.url)
    receiver.secret = endpoint["secret"]
    receiver.answers = [410]
    create_location(client)
    deliverer = Deliverer(database, FAST_RETRIES, concurrency=1)
    disabled = lambda: not client.get(f"/api/v1/webhooks/{endpoint['id']}").json()["enabled"]  # noqa: E731
    try:
        drain(deliverer, disabled)
    finally:
        deliverer.close()
    body = client.get(f"/api/v1/webhooks/{endpoint['id']}").json()
    assert body["enabled"] is False
    assert "410" in body["disabled_reason"]
    assert receiver.received == []


def test_private_targets_are_refused_at_registration(client, app):
    app.app.extensions["storekeeper.webhooks"] = WebhookSettings()
    try:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://localhost/hook",
        ):
            response = client.post("/api/v1/webhooks", json={"url": url})
            assert response.status_code == 422, (url, response.text)
    finally:
        app.app.extensions["storekeeper.webhooks"] = FAST_RETRIES
