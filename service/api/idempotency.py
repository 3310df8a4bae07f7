"""Idempotency-Key for stock-writing POSTs: a retry never writes a second document.

Everything happens in the request's own transaction (its ``unit_of_work``), so a claim lives
exactly as long as the request that holds it and dies with it:

- **PostgreSQL**: the transaction's first statement takes a transaction-scoped advisory lock
  on a hash of (scope, key), ``pg_try_advisory_xact_lock``. A concurrent request with the
  key cannot get it and, unless a stored response is there to replay, answers 409
  ``idempotency-key-in-use`` at once, without waiting. The lock ends with the transaction:
  commit, rollback, or the death of the process that held it (the server rolls back the
  connection of a client that is gone), so a retry after a crash goes through at once
  instead of waiting for a committed claim to go stale.
- **SQLite**: writers are serialised (``BEGIN IMMEDIATE`` plus the per-process writer lock
  of :class:`service.db.Database`), so the write transaction itself is the claim: a
  concurrent duplicate waits for it, then reads the committed record and replays it. No
  duplicate can be in progress beside it, so SQLite never answers 409 here.

Then the request looks for the key's stored record (committed records never change, so even
a request that could not get the lock may replay one): the same request hash replays it
(``Idempotent-Replayed: true``), another hash is a 422 ``idempotency-key-reused``, an expired
record is deleted by the holder of the key. Otherwise the holder runs the handler, and its
successful response is inserted in the same transaction as the document it describes: both
commit or neither. A request that fails commits nothing, so errors are not stored and the key
may be retried. A row therefore always holds a completed response (the table has no "in
progress" state). Keys are scoped to the caller's credential, compared by a hash of the
request, and expire after 24 hours; expired rows are purged, in batches, as new ones are
stored. The unique (scope, key) constraint is the last guard: two responses for one key never
both commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import request
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import db
from service.api.responses import json_response
from service.api.security import current_principal
from service.formats import utcnow
from service.models import IdempotencyRecord
from service.problems import IdempotencyKeyInUseProblem, IdempotencyKeyReusedProblem

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
REPLAYED_RESPONSE_HEADERS = ("Location",)
# Every PURGE_EVERY-th stored response (by its id) deletes up to PURGE_BATCH expired rows:
# bounded work on one request in eight, the others pay nothing, and still more than one row
# is purged per row added, so the table never grows past a day of keys.
PURGE_EVERY = 8
PURGE_BATCH = 800
# Mixed into the advisory lock's hash: other users of PostgreSQL's 64-bit advisory lock space
# do not share our numbers.
LOCK_NAMESPACE = "storekeeper.idempotency"


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


def advisory_lock_id(scope: str, key: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock number of (scope, key)."""
    text = "\0".join((LOCK_NAMESPACE, scope, key)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big", signed=True)


RECORDS = IdempotencyRecord.__table__


def _hold(session: Session, scope: str, key: str) -> bool:
    """Hold the key for the rest of this transaction; False if another transaction holds it."""
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite: this write transaction already excludes every other writer.
    lock = func.pg_try_advisory_xact_lock(advisory_lock_id(scope, key))
    return bool(session.connection().execute(select(lock)).scalar())


def _stored(session: Session, scope: str, key: str, fingerprint: str, *, held: bool) -> Any:
    """The live record of the key to replay, or None; 422 for a record of another request.

    A committed record never changes, so it is read (and replayed) without holding the key.
    An expired one is deleted, only by the holder of the key.
    """
    connection = session.connection()
    record = connection.execute(
        select(RECORDS).where(RECORDS.c.scope == scope, RECORDS.c.key == key)
    ).first()
    if record is None:
        return None
    if record.expires_at <= utcnow():
        if held:
            connection.execute(delete(RECORDS).where(RECORDS.c.id == record.id))
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReusedProblem(key)
    return record


def _store(session: Session, scope: str, key: str, fingerprint: str, result: Any) -> None:
    """Keep a successful response in the handler's transaction, beside its document."""
    body, status, headers = result
    if not 200 <= status < 300:
        return
    # The handler's own ORM writes first: a constraint they break is theirs, not a key clash.
    session.flush()
    connection = session.connection()
    now = utcnow()
    kept = {name: headers[name] for name in REPLAYED_RESPONSE_HEADERS if name in headers}
    try:
        stored_id = connection.execute(
            insert(RECORDS)
            .values(
                scope=scope,
                key=key,
                request_hash=fingerprint,
                response_status=status,
                response_body=json.dumps(body, separators=(",", ":")),
                response_headers=json.dumps(kept),
                created_at=now,
                expires_at=now + TTL,
            )
            .returning(RECORDS.c.id)
        ).scalar_one()
    except IntegrityError as exc:  # pragma: no cover - the held key excludes this
        raise IdempotencyKeyInUseProblem(key) from exc
    if stored_id % PURGE_EVERY == 0:
        # Rows locked by another purger are skipped (PostgreSQL), never waited for.
        expired = (
            select(RECORDS.c.id)
            .where(RECORDS.c.expires_at <= now)
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        connection.execute(delete(RECORDS).where(RECORDS.c.id.in_(expired)))


def _replay(record: Any):
    headers = json.loads(record.response_headers)
    headers[REPLAYED_HEADER] = "true"
    return json_response(json.loads(record.response_body), record.response_status, headers)


def idempotent(handler: F) -> F:
    """Honour Idempotency-Key on a handler; it must run inside ``transaction.unit_of_work``
    (decorate below it): the key is held by the request's own transaction."""

    @functools.wraps(handler)
    def in_transaction(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if not key:
            return handler(*args, **kwargs)
        session = db.session()  # RuntimeError outside a unit of work: a wiring mistake
        scope = credential_scope()
        fingerprint = request_fingerprint()
        held = _hold(session, scope, key)
        stored = _stored(session, scope, key, fingerprint, held=held)
        if stored is not None:
            return _replay(stored)
        if not held:  # the first request with the key is still running
            raise IdempotencyKeyInUseProblem(key)
        result = handler(*args, **kwargs)
        _store(session, scope, key, fingerprint, result)
        return result

    return in_transaction  # type: ignore[return-value]
