"""Webhook delivery: what ``storekeeper worker`` does, in short transactions around HTTP calls.

Each round of :meth:`Deliverer.run_once`:

1. **plan**: every enabled endpoint that has no in-order delivery pending and is behind the
   feed gets one for its next event of its types (or, if none is left, its position moves
   to the end of the feed). One in-order delivery per endpoint at a time keeps its events in
   sequence order: a failing event holds the ones after it for that endpoint only.
2. **claim**: due deliveries are leased to this worker (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so several workers never take the same one; SQLite runs one writer at a time).
3. **send** each outside any transaction: the Standard Webhooks headers and body, signed by
   the ``standardwebhooks`` package with the endpoint's secret (and, during a rotation's
   overlap, its previous one too), to the address the target guard checked, with a timeout.
4. **record** the attempt: a 2xx completes the delivery and moves the endpoint on; anything
   else schedules a retry (exponential backoff with jitter, ``Retry-After`` honoured); 410
   disables the endpoint, and so does an oldest event that has failed for the retry horizon.

A worker killed mid-delivery leaves a lease that runs out; the delivery is then sent again
(at least once: receivers deduplicate by ``webhook-id``, the event's id).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from standardwebhooks import Webhook

from service.config import WebhookSettings
from service.db import Database
from service.db import session as current_session
from service.domain import secrets, webhook_targets
from service.formats import format_timestamp, utcnow
from service.models.event import (
    Event,
    EventSequence,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

logger = logging.getLogger("storekeeper.webhooks")

ENDPOINTS = WebhookEndpoint.__table__
DELIVERIES = WebhookDelivery.__table__
EVENTS = Event.__table__
USER_AGENT = "Storekeeper-Webhooks/1"
PRUNE_EVERY_S = 60.0


# --- the message ---------------------------------------------------------------------------


def event_payload(event: Any) -> dict[str, Any]:
    """The body of a delivery: Standard Webhooks' ``type``, ``timestamp`` and ``data``, plus
    the event's feed position and id."""
    return {
        "type": event.type,
        "timestamp": format_timestamp(event.created_at),
        "sequence": event.sequence,
        "id": event.id,
        "data": event.data,
    }


def signing_secrets(endpoint: Any, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one while a
    rotation's overlap lasts."""
    found = [secrets.decrypt(endpoint.secret_ciphertext)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_ciphertext and expires is not None and expires > now:
        found.append(secrets.decrypt(endpoint.previous_secret_ciphertext))
    return found


def signed_headers(
    message_id: str, body: bytes, secrets_now: list[str], now: datetime
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (one ``v1,`` signature
    per secret, space-separated, as Standard Webhooks allows for rotations)."""
    signatures = [Webhook(secret).sign(message_id, now, body) for secret in secrets_now]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


# --- retries -------------------------------------------------------------------------------


def retry_delay(attempts: int, settings: WebhookSettings, retry_after: float | None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    exponent = min(attempts - 1, 40)
    delay = min(settings.retry_max_delay_s, settings.retry_base_s * 2**exponent)
    delay *= random.uniform(0.8, 1.2)  # jitter, not a secret
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, settings.retry_max_delay_s)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


# --- one attempt ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    duration_ms: int
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def _error(text: str) -> str:
    return text if len(text) <= 500 else text[:497] + "..."


def send(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str],
    settings: WebhookSettings,
) -> Outcome:
    """POST one delivery; what came back. Never raises for what the receiver does."""
    started = time.perf_counter()

    def took() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        target = webhook_targets.check(url, allow_private=settings.allow_private_targets)
    except webhook_targets.TargetRefused as exc:
        return Outcome(False, took(), error=_error(f"target refused: {exc}"))
    request_url, extensions = url, {}
    if target.address is not None:
        # Connect to the address that was checked; the name still goes in Host and SNI.
        parts = httpx.URL(url)
        request_url = str(parts.copy_with(host=target.address))
        headers = {**headers, "Host": parts.netloc.decode()}
        if target.scheme == "https":
            extensions = {"sni_hostname": target.host}
    all_headers = {
        **headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        with client.stream(
            "POST", request_url, content=body, headers=all_headers, extensions=extensions
        ) as response:
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("Retry-After"), utcnow())
    except httpx.TimeoutException:
        return Outcome(False, took(), error=f"no answer within {settings.timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, took(), error=_error(f"{type(exc).__name__}: {exc}"))
    if 200 <= status < 300:
        return Outcome(True, took(), status)
    return Outcome(False, took(), status, f"HTTP {status}", retry_after)


# --- the worker's rounds -------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    endpoint_id: int
    redelivery: bool
    url: str
    body: bytes
    headers: dict[str, str]
    sequence: int


class Deliverer:
    """Plans, claims, sends and records deliveries on one database."""

    def __init__(
        self,
        database: Database,
        settings: WebhookSettings,
        *,
        concurrency: int = 4,
        owner: str | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.concurrency = concurrency
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self.client = httpx.Client(timeout=settings.timeout_s, follow_redirects=False)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="webhook")
        self._last_prune = 0.0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()

    def run_once(self) -> int:
        """One round: plan, claim, send and record; how many attempts it made."""
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.prune()
        self.plan()
        claimed = self.claim()
        if not claimed:
            return 0
        outcomes = list(self._pool.map(self._send, claimed))
        for item, (started, outcome) in zip(claimed, outcomes, strict=True):
            self.record(item, started, outcome)
        return len(claimed)

    def _send(self, item: Claimed) -> tuple[datetime, Outcome]:
        started = utcnow()
        return started, send(self.client, item.url, item.body, item.headers, self.settings)

    # 1. plan

    def plan(self) -> None:
        behind = self.database.run(self._endpoints_behind, write=False)
        for endpoint_id in behind:
            with contextlib.suppress(IntegrityError):  # another worker planned it first
                self.database.run(lambda endpoint_id=endpoint_id: self._plan_one(endpoint_id))

    def _endpoints_behind(self) -> list[int]:
        session = current_session()
        last = select(EventSequence.last_sequence).scalar_subquery()
        pending = exists().where(
            DELIVERIES.c.endpoint_id == ENDPOINTS.c.id,
            DELIVERIES.c.status == "pending",
            DELIVERIES.c.redelivery.is_(False),
        )
        return list(
            session.scalars(
                select(ENDPOINTS.c.id).where(
                    ENDPOINTS.c.enabled.is_(True),
                    ENDPOINTS.c.delivered_through < func.coalesce(last, 0),
                    ~pending,
                )
            )
        )

    def _plan_one(self, endpoint_id: int) -> None:
        session = current_session()
        endpoint = session.execute(
            select(ENDPOINTS.c.id, ENDPOINTS.c.event_types, ENDPOINTS.c.delivered_through)
            .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.enabled.is_(True))
            .with_for_update(skip_locked=True)
        ).one_or_none()
        if endpoint is None:
            return
        # Read after the lock: a delivery another worker planned and committed is seen.
        if session.scalar(
            select(DELIVERIES.c.id).where(
                DELIVERIES.c.endpoint_id == endpoint_id,
                DELIVERIES.c.status == "pending",
                DELIVERIES.c.redelivery.is_(False),
            )
        ):
            return
        last = session.scalar(select(EventSequence.last_sequence)) or 0
        # Every event up to the counter's value is visible: it committed with the counter.
        stmt = select(EVENTS.c.sequence, EVENTS.c.id, EVENTS.c.type).where(
            EVENTS.c.sequence > endpoint.delivered_through, EVENTS.c.sequence <= last
        )
        if endpoint.event_types:
            stmt = stmt.where(EVENTS.c.type.in_(endpoint.event_types))
        following = session.execute(stmt.order_by(EVENTS.c.sequence).limit(1)).one_or_none()
        if following is None:
            session.execute(
                update(ENDPOINTS)
                .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.delivered_through < last)
                .values(delivered_through=last)
            )
            return
        session.add(
            WebhookDelivery(
                endpoint_id=endpoint_id,
                event_sequence=following.sequence,
                event_id=following.id,
                event_type=following.type,
                redelivery=False,
                status="pending",
                next_attempt_at=utcnow(),
            )
        )

    # 2. claim

    def claim(self) -> list[Claimed]:
        return self.database.run(self._claim)

    def _claim(self) -> list[Claimed]:
        session = current_session()
        now = utcnow()
        rows = session.execute(
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.endpoint_id,
                DELIVERIES.c.redelivery,
                DELIVERIES.c.event_sequence,
            )
            .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
            .where(
                DELIVERIES.c.status == "pending",
                DELIVERIES.c.next_attempt_at <= now,
                or_(DELIVERIES.c.lease_expires_at.is_(None), DELIVERIES.c.lease_expires_at < now),
                ENDPOINTS.c.enabled.is_(True),
            )
            .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
            .limit(self.concurrency)
            .with_for_update(of=DELIVERIES, skip_locked=True)
        ).all()
        if not rows:
            return []
        session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_([row.id for row in rows]))
            .values(
                lease_owner=self.owner,
                lease_expires_at=now + timedelta(seconds=self.settings.lease_s),
            )
        )
        endpoints = {
            e.id: e
            for e in session.execute(
                select(ENDPOINTS).where(ENDPOINTS.c.id.in_({row.endpoint_id for row in rows}))
            )
        }
        events = {
            e.sequence: e
            for e in session.execute(
                select(EVENTS).where(EVENTS.c.sequence.in_({row.event_sequence for row in rows}))
            )
        }
        claimed = []
        for row in rows:
            event = events.get(row.event_sequence)
            if event is None:
                # Retention removed it before it could be delivered.
                self._complete(session, row.id, "expired", now)
                if not row.redelivery:
                    self._advance(session, row.endpoint_id, row.event_sequence)
                continue
            endpoint = endpoints[row.endpoint_id]
            body = json.dumps(event_payload(event), separators=(",", ":")).encode()
            headers = signed_headers(event.id, body, signing_secrets(endpoint, now), now)
            claimed.append(
                Claimed(
                    row.id,
                    row.endpoint_id,
                    row.redelivery,
                    endpoint.url,
                    body,
                    headers,
                    row.event_sequence,
                )
            )
        return claimed

    # 4. record

    def record(self, item: Claimed, started: datetime, outcome: Outcome) -> None:
        self.database.run(lambda: self._record(item, started, outcome))
        if outcome.succeeded:
            logger.info("webhook delivery %s sent (%s ms)", item.delivery_id, outcome.duration_ms)
        else:
            logger.warning(
                "webhook delivery %s failed: %s", item.delivery_id, outcome.error or outcome.status
            )

    def _record(self, item: Claimed, started: datetime, outcome: Outcome) -> None:
        session = current_session()
        now = utcnow()
        delivery = session.execute(
            select(DELIVERIES).where(DELIVERIES.c.id == item.delivery_id).with_for_update()
        ).one_or_none()
        if delivery is None:  # the endpoint was deleted meanwhile
            return
        session.add(
            WebhookAttempt(
                delivery_id=item.delivery_id,
                started_at=started,
                duration_ms=outcome.duration_ms,
                succeeded=outcome.succeeded,
                response_status=outcome.status,
                error=outcome.error,
            )
        )
        attempts = delivery.attempt_count + 1
        if outcome.succeeded:
            session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == item.delivery_id)
                .values(
                    attempt_count=attempts,
                    status="succeeded",
                    completed_at=now,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if not item.redelivery:
                self._advance(session, item.endpoint_id, item.sequence)
            return
        if delivery.status != "pending" or delivery.lease_owner != self.owner:
            # Another worker took it over (our lease ran out) or it was completed: its
            # attempt decides, this one is only on record.
            session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == item.delivery_id)
                .values(attempt_count=attempts)
            )
            return
        endpoint = session.execute(
            select(ENDPOINTS.c.failing_since).where(ENDPOINTS.c.id == item.endpoint_id)
        ).one()
        if item.redelivery:
            failing_since = delivery.created_at
        else:
            failing_since = endpoint.failing_since or delivery.created_at
        given_up = (now - failing_since).total_seconds() >= self.settings.retry_horizon_s
        delay = retry_delay(attempts, self.settings, outcome.retry_after)
        values: dict[str, Any] = {
            "attempt_count": attempts,
            "next_attempt_at": now + timedelta(seconds=delay),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if item.redelivery and given_up:
            values.update(status="failed", completed_at=now, next_attempt_at=None)
        session.execute(
            update(DELIVERIES).where(DELIVERIES.c.id == item.delivery_id).values(values)
        )
        reason = None
        if outcome.status == 410:
            reason = f"The receiver answered 410 Gone on {format_timestamp(now)}."
        elif given_up and not item.redelivery:
            reason = (
                f"No event could be delivered since {format_timestamp(failing_since)} "
                f"({attempts} attempts at the oldest; last: {outcome.error})."
            )
        endpoint_values: dict[str, Any] = {}
        if not item.redelivery:
            endpoint_values["failing_since"] = failing_since
        if reason is not None:
            endpoint_values.update(
                enabled=False,
                disabled_reason=reason,
                version=ENDPOINTS.c.version + 1,
                updated_at=now,
            )
            logger.warning("webhook endpoint %s disabled: %s", item.endpoint_id, reason)
        if endpoint_values:
            session.execute(
                update(ENDPOINTS).where(ENDPOINTS.c.id == item.endpoint_id).values(endpoint_values)
            )

    @staticmethod
    def _complete(session, delivery_id: int, status: str, now: datetime) -> None:
        session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == delivery_id)
            .values(status=status, completed_at=now, lease_owner=None, lease_expires_at=None)
        )

    @staticmethod
    def _advance(session, endpoint_id: int, sequence: int) -> None:
        """The endpoint has its events through ``sequence`` (never moving back)."""
        session.execute(
            update(ENDPOINTS)
            .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.delivered_through < sequence)
            .values(delivered_through=sequence, failing_since=None)
        )

    # retention

    def prune(self) -> int:
        """Delete events, and finished deliveries, older than the retention period."""
        cutoff = utcnow() - timedelta(days=self.settings.event_retention_days)

        def work() -> int:
            session = current_session()
            removed = session.execute(delete(EVENTS).where(EVENTS.c.created_at < cutoff))
            session.execute(
                delete(DELIVERIES).where(
                    DELIVERIES.c.status != "pending",
                    DELIVERIES.c.created_at < cutoff,
                )
            )
            return removed.rowcount or 0

        return self.database.run(work)
