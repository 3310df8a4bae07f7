"""Idempotency-Key for stock-writing POSTs: a retry never writes a second document.

The first request with a key *claims* it in a short transaction of its own (state
``in_progress``), so concurrent retries see the claim at once and get 409. Its response is
stored in the same transaction as the document it describes (``transaction.before_commit``): either
both exist or neither. If the request fails, the claim is released so the key can be
retried. Keys are scoped to the caller's credential, compared by a hash of the request, and
expire after 24 hours.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api import transaction
from service.api.responses import json_response
from service.api.security import current_principal
from service.formats import utcnow
from service.models import IdempotencyRecord
from service.problems import IdempotencyKeyInUseProblem, IdempotencyKeyReusedProblem

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
# A claim whose request died without releasing it (a killed process) is taken over after this.
ABANDONED_AFTER = timedelta(minutes=5)
REPLAYED_RESPONSE_HEADERS = ("Location",)


def credential_scope() -> str:
    """Keys belong to the credential that sent them: one client cannot replay another's."""
    principal = current_principal()
    return principal.scope_key if principal else "anonymous"


def request_fingerprint() -> str:
    body = request.get_json(silent=True)
    canonical = json.dumps(
        {"method": request.method, "path": request.path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _claim(scope: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
    """Claim the key (None) or return the completed record to replay."""
    database = transaction.get_database()
    now = utcnow()
    try:
        with database.transaction(write=True) as session:
            # Expired keys go as new ones arrive (indexed on expires_at): the table stays small.
            session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.expires_at <= now,
                    IdempotencyRecord.key != key,
                )
            )
            record = session.scalar(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                .with_for_update()
            )
            abandoned = (
                record is not None
                and record.state == "in_progress"
                and record.created_at <= now - ABANDONED_AFTER
            )
            if record is not None and (record.expires_at <= now or abandoned):
                session.delete(record)
                session.flush()
                record = None
            if record is None:
                session.add(
                    IdempotencyRecord(
                        scope=scope,
                        key=key,
                        request_hash=fingerprint,
                        state="in_progress",
                        created_at=now,
                        expires_at=now + TTL,
                    )
                )
                return None
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReusedProblem(key)
            if record.state != "completed":
                raise IdempotencyKeyInUseProblem(key)
            session.expunge(record)
            return record
    except IntegrityError as exc:
        # Another request inserted the same key between our read and our insert.
        raise IdempotencyKeyInUseProblem(key) from exc


def _release(scope: str, key: str) -> None:
    with transaction.get_database().transaction(write=True) as session:
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
                IdempotencyRecord.state == "in_progress",
            )
        )


def _store(scope: str, key: str) -> Callable[[Session, Any], None]:
    def store(session: Session, result: Any) -> None:
        body, status, headers = result
        kept = {name: headers[name] for name in REPLAYED_RESPONSE_HEADERS if name in headers}
        record = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
            )
        )
        if record is None:  # pragma: no cover - the claim is ours until we release it
            raise IdempotencyKeyInUseProblem(key)
        record.state = "completed"
        record.response_status = status
        record.response_body = json.dumps(body, separators=(",", ":"))
        record.response_headers = json.dumps(kept)

    return store


def _replay(record: IdempotencyRecord):
    headers = json.loads(record.response_headers or "{}")
    headers[REPLAYED_HEADER] = "true"
    return json_response(
        json.loads(record.response_body or "null"), record.response_status, headers
    )


def idempotent(handler: F) -> F:
    """Honour Idempotency-Key on a handler already wrapped in ``transaction.unit_of_work``."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if not key:
            return handler(*args, **kwargs)
        scope = credential_scope()
        completed = _claim(scope, key, request_fingerprint())
        if completed is not None:
            return _replay(completed)
        try:
            with transaction.before_commit(_store(scope, key)):
                return handler(*args, **kwargs)
        except BaseException:
            _release(scope, key)
            raise

    return wrapper  # type: ignore[return-value]
