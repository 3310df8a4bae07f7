"""One transaction per request: the unit of work every operation handler runs in.

:func:`unit_of_work` runs a handler in the app's :meth:`~service.db.Database.run` (write
intent for anything but GET/HEAD/OPTIONS), so a request commits everything it did when the
handler returns and nothing when it raises (and runs again, once, if its pooled connection
turned out dead), and maps the database's conflict errors to problems. Decorators below it
(``idempotency.idempotent``) run inside that same transaction.

:func:`replica_read` does the same for a read that may lag the primary's latest writes (the
reports): it runs on the read replica when there is a current one, else on the primary
(:meth:`~service.db.Database.run_on_replica`), and says which in ``X-Data-Source``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, request
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from service.api import security
from service.db import Database, is_lock_timeout, session
from service.domain.accounts import Principal
from service.problems import (
    ConcurrentChangeProblem,
    ConflictProblem,
    NotFoundProblem,
    PreconditionFailedProblem,
    ServiceUnavailableProblem,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXTENSION_KEY = "storekeeper.database"
# Set on unit_of_work's wrappers: they confirm the credential in their own transaction.
CONFIRMS_CREDENTIAL = "storekeeper_confirms_credential"
WEBHOOK_SETTINGS_KEY = "storekeeper.webhooks"
DATA_SOURCE_HEADER = "X-Data-Source"
_CHANGED_MEANWHILE = "The resource changed while this request ran; fetch it and retry."


def get_database() -> Database:
    """The database of the Flask application handling the current request."""
    return current_app.extensions[EXTENSION_KEY]


def unit_of_work(handler: F) -> F:
    """Run an operation handler in one transaction; map database conflicts to problems.

    The transaction's first statement confirms a credential the security layer answered from
    memory (:func:`service.api.security.confirm_credential`): on the handler's connection."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        write = request.method not in {"GET", "HEAD", "OPTIONS"}
        confirmed: list[Principal] = []

        def work() -> Any:
            principal = security.confirm_credential()
            if principal is not None:
                confirmed.append(principal)
            return handler(*args, **kwargs)

        database = get_database()
        try:
            return database.run(work, write=write)
        except StaleDataError as exc:
            # Another request updated the row between our read and our write.
            if request.headers.get("If-Match"):
                raise PreconditionFailedProblem(_CHANGED_MEANWHILE) from exc
            raise ConcurrentChangeProblem(_CHANGED_MEANWHILE) from exc
        except IntegrityError as exc:
            # A constraint caught a race that the handler's own checks could not see.
            raise ConflictProblem(
                "conflict",
                "The request conflicts with the current state of a resource; "
                "reload it and try again.",
            ) from exc
        except OperationalError as exc:
            if is_lock_timeout(exc):
                raise ServiceUnavailableProblem(
                    "The database is busy; retry the request shortly.", retry_after=1
                ) from exc
            raise
        finally:
            if confirmed:
                security.record_use(database, confirmed[0])

    setattr(wrapper, CONFIRMS_CREDENTIAL, True)
    return wrapper  # type: ignore[return-value]


def credential_confirmed(handler: F) -> F:
    """``handler`` preceded by its own short read confirming the request's credential, unless
    it confirms it in its unit of work already (:func:`unit_of_work`). Applied to every
    operation by the app's resolver; a replica read confirms on the primary."""
    if getattr(handler, CONFIRMS_CREDENTIAL, False):
        return handler

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        database = get_database()
        principal = database.run(security.confirm_credential, write=False)
        security.record_use(database, principal)
        return handler(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def replica_read(handler: F) -> F:
    """Run a read-only handler on the read replica if current, else on the primary; the
    response's ``X-Data-Source`` says which. Only for reads that need not see the latest
    writes: everything else is :func:`unit_of_work`."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result, source = get_database().run_on_replica(lambda: handler(*args, **kwargs))
        return with_data_source(result, source)

    return wrapper  # type: ignore[return-value]


def with_data_source(result: Any, source: str) -> Any:
    """A handler's result (a Response or a ``(body, status, headers)`` tuple) with
    ``X-Data-Source: source``."""
    if isinstance(result, Response):
        result.headers[DATA_SOURCE_HEADER] = source
        return result
    body, status, headers = result
    return body, status, {**headers, DATA_SOURCE_HEADER: source}


def get_or_404(model: type[T], identifier: int, resource: str) -> T:
    """Load a row by primary key or answer 404 naming the resource."""
    found = session().get(model, identifier)
    if found is None:
        raise NotFoundProblem(resource, identifier)
    return found
