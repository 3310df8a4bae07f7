"""The event feed and webhook workers as they run in production, on both databases.

A module fixture starts the production server (scripts/serve-production.sh: gunicorn, two
worker processes) on a throwaway database; the tests start ``storekeeper worker`` processes
beside it and a real HTTP receiver on 127.0.0.1 that verifies every signature with the
``standardwebhooks`` package, as a receiver would.

- A worker SIGKILLed while the receiver holds its request loses nothing: another worker sends
  that event again once the lease runs out, then the rest, in order.
- A receiver that is down (nothing listening on its port) for a while, then up, gets every
  event, in order, once each by ``webhook-id``.
- Two workers over three endpoints: each endpoint gets its events in sequence order, once.
- Eight concurrent writers and a reader polling ``after=``: the feed is 1..N without a gap,
  one event per answered 201, and the reader, which only ever asks for sequences after the
  last it saw, has seen every one of them (an event committed behind it would be missed).

The delivery latency (commit to receiver) and throughput seen go to
``artifacts/webhook-delivery.json``; they are figures, not assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from service.config import PROJECT_ROOT
from tests.conftest import throwaway_database
from tests.live_server import LiveServer, free_port, live_server, venv_bin

WRITERS = 8
PACED, BURST = 20, 30  # events in the two-worker test's two phases
WRITE_SECONDS = 4.0
LEASE_S = 3.0
ARTIFACT = PROJECT_ROOT / "artifacts" / "webhook-delivery.json"
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is on 127.0.0.1
    "WEBHOOK_LEASE": str(LEASE_S),
    "WEBHOOK_RETRY_BASE": "0.2",
    "WEBHOOK_RETRY_MAX_DELAY": "1",
    "WEBHOOK_TIMEOUT": "5",
    "WORKER_POLL_INTERVAL": "0.05",
    "LOG_LEVEL": "INFO",
}


class Receiver:
    """A webhook receiver on 127.0.0.1: verifies, records arrivals, can hold one request."""

    def __init__(self, secret: str, port: int = 0, hold_first: bool = False) -> None:
        self.secret = secret
        self.arrivals: list[tuple[float, dict, dict]] = []  # (when, headers, body)
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.release = threading.Event()
        self._hold = hold_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {key.lower(): value for key, value in self.headers.items()}
                Webhook(receiver.secret).verify(body, headers)  # raises if forged
                with receiver.lock:
                    receiver.arrivals.append((time.time(), headers, json.loads(body)))
                    hold, receiver._hold = receiver._hold, False
                if hold:
                    receiver.holding.set()
                    receiver.release.wait(30)
                with contextlib.suppress(OSError):  # the sender may be dead by now
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def unique(self) -> list[dict]:
        """Bodies once each by ``webhook-id``, in order of first arrival."""
        seen: dict[str, dict] = {}
        with self.lock:
            for _, headers, body in self.arrivals:
                assert headers["webhook-id"] == body["id"]
                seen.setdefault(headers["webhook-id"], body)
        return list(seen.values())

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def live(backend, tmp_path_factory) -> Iterator[LiveServer]:
    with throwaway_database(backend, tmp_path_factory) as url:
        log_path = tmp_path_factory.mktemp("live") / f"server-{backend}.log"
        env = {
            "RATE_LIMIT_ENABLED": "false",
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "LOG_LEVEL": "WARNING",
        }
        with live_server(url, workers=2, env=env, log_path=log_path) as server:
            yield server


@pytest.fixture()
def api(live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.base_url, timeout=30.0, headers=live.headers) as client:
        yield client
        # Each test's endpoints end with it: the next test's events are not theirs.
        for endpoint in client.get("/api/v1/webhooks", params={"limit": 200}).json()["items"]:
            etag = client.get(f"/api/v1/webhooks/{endpoint['id']}").headers["ETag"]
            client.delete(f"/api/v1/webhooks/{endpoint['id']}", headers={"If-Match": etag})


class Workers:
    """``storekeeper worker`` processes on the live server's database."""

    def __init__(self, live: LiveServer, log_dir: Path) -> None:
        self.live = live
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        env = {**os.environ, "DATABASE_URL": self.live.database_url, **WORKER_ENV}
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [str(venv_bin() / "storekeeper"), "worker", "--concurrency", "4"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.iterdir())
        )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture()
def workers(live, tmp_path) -> Iterator[Workers]:
    started = Workers(live, tmp_path)
    yield started
    started.stop_all()


def register(api: httpx.Client, url: str, **body) -> dict:
    response = api.post("/api/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


def last_sequence(api: httpx.Client) -> int:
    """The feed's newest sequence (0 if empty), walking the feed forward."""
    last = 0
    while True:
        items = api.get("/api/v1/events", params={"after": last, "limit": 200}).json()["items"]
        if not items:
            return last
        last = items[-1]["sequence"]


def feed_after(api: httpx.Client, after: int, **params) -> list[dict]:
    found: list[dict] = []
    while True:
        response = api.get("/api/v1/events", params={"after": after, "limit": 200, **params})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        if not items:
            return found
        found.extend(items)
        after = items[-1]["sequence"]


def create_locations(api: httpx.Client, count: int, tag: str) -> list[dict]:
    created = []
    for index in range(count):
        response = api.post("/api/v1/locations", json={"code": f"{tag}-{index}", "name": tag})
        assert response.status_code == 201, response.text
        created.append(response.json())
    return created


def wait_for(condition, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s; worker logs:\n{workers.logs()}")
        time.sleep(0.05)


def latencies_ms(receiver: Receiver) -> list[float]:
    """Commit (the event's created_at, stamped as it commits) to first arrival, per event."""
    first: dict[str, float] = {}
    with receiver.lock:
        for when, headers, body in receiver.arrivals:
            created = datetime.fromisoformat(body["timestamp"]).timestamp()
            first.setdefault(headers["webhook-id"], (when - created) * 1000)
    return list(first.values())


def record_figures(name: str, backend: str, figures: dict) -> None:
    ARTIFACT.parent.mkdir(exist_ok=True)
    try:
        recorded = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded.setdefault(backend, {})[name] = figures
    ARTIFACT.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"{name} [{backend}]: {figures}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def test_a_worker_killed_mid_delivery_loses_nothing(api, workers, backend):
    receiver = Receiver(secret="", hold_first=True)
    try:
        endpoint = register(api, f"http://127.0.0.1:{receiver.port}/hook")
        receiver.secret = endpoint["secret"]
        after = last_sequence(api)
        create_locations(api, 4, f"KILL-{uuid.uuid4().hex[:6]}")
        expected = feed_after(api, after)
        assert len(expected) == 4

        doomed = workers.start()
        wait_for(receiver.holding.is_set, 30, "the first delivery did not arrive", workers)
        doomed.send_signal(signal.SIGKILL)  # mid-delivery: the receiver has not answered
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
        receiver.release.set()

        workers.start()
        wait_for(lambda: len(receiver.unique()) == 4, 30, "not every event arrived", workers)
        recovered_s = time.monotonic() - killed_at

        assert [body["sequence"] for body in receiver.unique()] == [
            event["sequence"] for event in expected
        ]
        first_id = expected[0]["id"]
        assert [h["webhook-id"] for _, h, _ in receiver.arrivals].count(first_id) == 2
        assert recovered_s >= LEASE_S * 0.9  # sent again only once the lease ran out
        deliveries = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["items"]
        assert [d["status"] for d in deliveries] == ["succeeded"] * 4
        record_figures(
            "worker_killed",
            backend,
            {"events": 4, "lease_s": LEASE_S, "all_delivered_after_kill_s": round(recovered_s, 2)},
        )
    finally:
        receiver.close()


def test_a_receiver_down_then_up_gets_every_event_once_in_order(api, workers, backend):
    port = free_port()  # nothing listens there yet: connections are refused
    endpoint = register(api, f"http://127.0.0.1:{port}/hook")
    after = last_sequence(api)
    workers.start()
    create_locations(api, 6, f"DOWN-{uuid.uuid4().hex[:6]}")
    expected = feed_after(api, after)
    time.sleep(2.0)  # the worker keeps failing meanwhile
    failing = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["items"]
    assert failing and failing[0]["status"] == "pending"
    assert failing[0]["attempts"] and failing[0]["attempts"][0]["response_status"] is None

    receiver = Receiver(endpoint["secret"], port=port)
    up_at = time.monotonic()
    try:
        wait_for(lambda: len(receiver.unique()) == 6, 30, "not every event arrived", workers)
        caught_up_s = time.monotonic() - up_at
        time.sleep(0.5)  # nothing more arrives
        bodies = receiver.unique()
        assert [body["sequence"] for body in bodies] == [e["sequence"] for e in expected]
        assert [body["data"] for body in bodies] == [e["data"] for e in expected]
        assert len(receiver.arrivals) == 6  # once each: no duplicate once it was up
        record_figures(
            "receiver_outage",
            backend,
            {"events": 6, "down_s": 2.0, "all_delivered_after_up_s": round(caught_up_s, 2)},
        )
    finally:
        receiver.close()


def test_two_workers_deliver_each_endpoints_events_in_order_once(api, workers, backend):
    receivers = [Receiver(secret="") for _ in range(3)]
    try:
        endpoints = []
        for receiver in receivers:
            endpoint = register(api, f"http://127.0.0.1:{receiver.port}/hook")
            receiver.secret = endpoint["secret"]
            endpoints.append(endpoint)
        workers.start()
        workers.start()
        after = last_sequence(api)
        tag = uuid.uuid4().hex[:6]
        for index in range(PACED):  # one event at a time: latency, not queueing
            create_locations(api, 1, f"PACED-{tag}-{index}")
            time.sleep(0.1)
        arrived = lambda count: lambda: all(len(r.unique()) == count for r in receivers)  # noqa: E731
        wait_for(arrived(PACED), 30, "not every endpoint got every paced event", workers)
        latencies = [ms for receiver in receivers for ms in latencies_ms(receiver)]
        burst_started = time.monotonic()
        create_locations(api, BURST, f"BURST-{tag}")  # then a burst: throughput
        wait_for(arrived(PACED + BURST), 60, "not every endpoint got every event", workers)
        burst_s = time.monotonic() - burst_started
        expected = [event["sequence"] for event in feed_after(api, after)]
        assert len(expected) == PACED + BURST
        for receiver in receivers:
            assert [body["sequence"] for body in receiver.unique()] == expected
            assert len(receiver.arrivals) == len(expected)  # no event sent twice
        record_figures(
            "two_workers_three_endpoints",
            backend,
            {
                "paced_deliveries": len(latencies),
                "latency_ms_p50": percentile(latencies, 0.5),
                "latency_ms_p99": percentile(latencies, 0.99),
                "burst_deliveries": BURST * len(receivers),
                "burst_deliveries_per_s": round(BURST * len(receivers) / burst_s, 1),
            },
        )
    finally:
        for receiver in receivers:
            receiver.close()


def test_concurrent_writers_leave_a_gap_free_feed_a_poller_never_skips(api, live, backend):
    product = api.post("/api/v1/products", json={"sku": f"GAP-{uuid.uuid4().hex[:6]}", "name": "G"})
    assert product.status_code == 201, product.text
    store = create_locations(api, 1, f"GAPSTORE-{uuid.uuid4().hex[:6]}")[0]
    start = last_sequence(api)
    stop = threading.Event()
    writers_done = threading.Event()
    answered: list[tuple[str, int]] = []  # (event type, resource id) per 201
    seen: list[int] = []
    errors: list[str] = []

    def writer(index: int) -> None:
        with httpx.Client(base_url=live.base_url, timeout=30, headers=live.headers) as client:
            count = 0
            while not stop.is_set():
                count += 1
                if count % 2:
                    response = client.post(
                        "/api/v1/locations",
                        json={"code": f"GAP-{index}-{count}-{uuid.uuid4().hex[:4]}", "name": "g"},
                    )
                    kind = "location.created"
                else:
                    response = client.post(
                        "/api/v1/stock/receipts",
                        json={
                            "location_id": store["id"],
                            "lines": [
                                {
                                    "product_id": product.json()["id"],
                                    "quantity": 1,
                                    "unit_cost": "1.00",
                                }
                            ],
                        },
                    )
                    kind = "stock.document.posted"
                if response.status_code != 201:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                answered.append((kind, response.json()["id"]))

    def reader() -> None:
        with httpx.Client(base_url=live.base_url, timeout=30, headers=live.headers) as client:
            last = start
            while True:
                done = writers_done.is_set()  # read once more after the last write answered
                response = client.get("/api/v1/events", params={"after": last, "limit": 200})
                if response.status_code != 200:
                    errors.append(f"reader: {response.status_code}")
                    return
                for item in response.json()["items"]:
                    if item["sequence"] <= last:
                        errors.append(f"reader: {item['sequence']} after {last}")
                    last = item["sequence"]
                    seen.append(last)
                if done and not response.json()["items"]:
                    return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    polling = threading.Thread(target=reader)
    polling.start()
    for thread in threads:
        thread.start()
    time.sleep(WRITE_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    writers_done.set()
    polling.join(timeout=60)

    assert errors == []
    feed = feed_after(api, start)
    sequences = [event["sequence"] for event in feed]
    assert sequences == list(range(start + 1, start + 1 + len(feed)))  # no gap
    assert sorted((e["type"], e["data"]["id"]) for e in feed) == sorted(answered)
    assert seen == sequences  # the poller saw every event: none committed behind it
    assert len(answered) > WRITERS * 5
    record_figures(
        "concurrent_writers",
        backend,
        {"writers": WRITERS, "seconds": WRITE_SECONDS, "events": len(feed)},
    )
