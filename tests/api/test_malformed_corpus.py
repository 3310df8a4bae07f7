"""Issue 11: a malformed-input corpus over every operation gets clean 4xx problems, writes nothing.

The corpus (tests/api/malformed_corpus.py) walks the spec and makes the hostile variants that
apply to each operation. It runs once per database against a small seeded store; then each
case is its own test, so a failure names the case (``POST /api/v1/stock/receipts
deep-json``), its status and the start of its answer. Every answer must be a 4xx
``application/problem+json`` with ``type``, ``title``, ``status`` and ``detail`` (the OAuth2
token endpoint's 400s: an RFC 6749 ``{error, error_description}`` document), no stack
trace or SQL, under 100 KB and never echoing a submitted huge value in full; the few
legitimate inputs (``%`` or ``_`` in ``q``, a far timestamp the service clamps) must get a
correct 2xx answer. Afterwards every table has the rows it had before.

The corpus size and the status counts go to ``artifacts/malformed-corpus.json``.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from service.config import PROJECT_ROOT
from service.domain.accounts import issue_access_token
from service.formats import utcnow
from service.models import Event, User, WebhookDelivery
from tests.api.malformed_corpus import (
    EXPECT_2XX,
    EXPECT_4XX,
    LOGIN_PASSWORD,
    PUBLIC_WEBHOOK_URL,
    Case,
    World,
    build_corpus,
    check,
    in_days,
    spec_operations,
)
from tests.conftest import bearer_for, create_user, wipe
from tests.helpers import create_category, create_location, create_product, walk_pages

CORPUS = build_corpus()
ARTIFACT = PROJECT_ROOT / "artifacts" / "malformed-corpus.json"


# --- the seeded store ---------------------------------------------------------------------


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def seed_world(client, database) -> World:
    """A category, products, locations, two receipts (so movements exist), a user, a key."""
    tools = create_category(client, "Tools")
    create_category(client, "Clearance 50%")
    create_category(client, "Odds_and_ends")
    spare_category = create_category(client, "Spare category")
    hammer = create_product(
        client, "HAM-16OZ", "Claw hammer", category_id=tools["id"], reorder_point=20
    )
    create_product(client, "RAG_100", "Rag 100% cotton")
    create_product(client, "BS-1", "Shelf A\\B")
    spare_product = create_product(client, "SPARE-1", "Spare product")
    main = create_location(client, "WH1-A01", "Main store")
    other = create_location(client, "WH1_B02", "Bay 50%")
    spare_location = create_location(client, "SPARE-LOC", "Spare location")
    receipt = created(
        client.post(
            "/api/v1/stock/receipts",
            json={
                "location_id": main["id"],
                "reference": "PO-1",
                "lines": [{"product_id": hammer["id"], "quantity": 10, "unit_cost": "7.25"}],
            },
        )
    )
    created(
        client.post(
            "/api/v1/stock/receipts",
            json={
                "location_id": other["id"],
                "reference": "%",
                "lines": [{"product_id": hammer["id"], "quantity": 2, "unit_cost": "7.00"}],
            },
        )
    )
    user = created(
        client.post(
            "/api/v1/users",
            json={
                "email": "corpus-viewer@example.com",
                "name": "Corpus viewer",
                "role": "viewer",
                "password": LOGIN_PASSWORD,
            },
        )
    )
    api_key = created(
        client.post(
            "/api/v1/api-keys",
            json={"name": "Corpus key", "role": "viewer", "expires_at": in_days(30)},
        )
    )
    webhook = created(
        client.post(
            "/api/v1/webhooks", json={"url": PUBLIC_WEBHOOK_URL, "description": "Corpus hook"}
        )
    )
    webhook_delivery_id = record_failed_delivery(database, webhook["id"])
    valuation = client.get("/api/v1/reports/valuation")
    assert valuation.status_code == 200, valuation.text
    world = World(
        category=tools,
        spare_category=spare_category,
        product=hammer,
        spare_product=spare_product,
        location=main,
        other_location=other,
        spare_location=spare_location,
        receipt=receipt,
        user=user,
        api_key=api_key,
        webhook=webhook,
        webhook_delivery_id=webhook_delivery_id,
        lists={
            name: walk_pages(client, f"/api/v1/{path}", limit=200)
            for name, path in (
                ("categories", "categories"),
                ("products", "products"),
                ("locations", "locations"),
                ("movements", "stock/movements"),
            )
        },
        valuation=valuation.json(),
    )
    # Logout revokes the token it is sent with: each logout case brings its own.
    logouts = create_user(database, "viewer")
    with database.transaction() as session:
        owner = session.get(User, logouts.id)
        world.logout_tokens = [
            issue_access_token(session, owner)[0]
            for _ in range(sum(case.needs_logout_token for case in CORPUS))
        ]
    return world


def record_failed_delivery(database, webhook_id: int) -> int:
    """A delivery of the newest event that failed once, as the worker would have left it."""
    with database.transaction() as session:
        event = session.scalars(select(Event).order_by(Event.sequence.desc()).limit(1)).one()
        delivery = WebhookDelivery(
            endpoint_id=webhook_id,
            event_sequence=event.sequence,
            event_id=event.id,
            event_type=event.type,
            redelivery=False,
            status="pending",
            attempt_count=1,
            next_attempt_at=utcnow() + timedelta(hours=1),
        )
        session.add(delivery)
        session.flush()
        return delivery.id


# --- the database, table by table ---------------------------------------------------------


def row_counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
            for table in sorted(inspect(connection).get_table_names())
        }


def table_contents(engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        return {
            table: sorted(
                repr(tuple(row)) for row in connection.execute(text(f'SELECT * FROM "{table}"'))
            )
            for table in sorted(inspect(connection).get_table_names())
        }


def changed_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, str]:
    return {
        table: f"{before.get(table)} -> {after.get(table)}"
        for table in sorted(set(before) | set(after))
        if before.get(table) != after.get(table)
    }


# --- running the corpus -------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None
    problems: list[str]
    snippet: str
    seconds: float


@dataclass
class CorpusRun:
    results: dict[str, Outcome]
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    contents_before: dict[str, list[str]]
    contents_after: dict[str, list[str]]
    count_changes_by_kind: dict[str, dict[str, str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # pytest shows fixtures in failure reports: keep it short
        return f"<CorpusRun of {len(self.results)} cases>"


def run_case(client, case: Case, world: World) -> Outcome:
    started = time.perf_counter()
    try:
        request = case.build(world)
        response = client.request(
            request.method, request.url, headers=request.headers, content=request.content
        )
    except Exception as exc:  # the case could not be sent: a failure of the case, not the run
        return Outcome(None, [f"raised {exc!r}"[:300]], "", time.perf_counter() - started)
    problems = check(case, response, world)
    snippet = response.content[:200].decode("utf-8", "replace")
    return Outcome(response.status_code, problems, snippet, time.perf_counter() - started)


def summarise(run: CorpusRun, seconds: float) -> dict[str, Any]:
    cases = {case.id: case for case in CORPUS}
    statuses = collections.Counter(str(o.status) for o in run.results.values())
    by_expectation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, list[dict]] = collections.defaultdict(list)
    for case_id, outcome in run.results.items():
        case = cases[case_id]
        by_expectation[case.expect][str(outcome.status)] += 1
        if outcome.problems:
            failures[case.kind].append(
                {
                    "case": case_id,
                    "status": outcome.status,
                    "problems": outcome.problems,
                    "body": outcome.snippet,
                }
            )
    seconds_by_kind: collections.Counter = collections.Counter()
    statuses_by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case_id, outcome in run.results.items():
        seconds_by_kind[cases[case_id].kind] += outcome.seconds
        statuses_by_kind[cases[case_id].kind][str(outcome.status)] += 1
    slowest = sorted(run.results.items(), key=lambda item: -item[1].seconds)[:10]
    return {
        "corpus_size": len(CORPUS),
        "cases_by_kind": dict(sorted(collections.Counter(c.kind for c in CORPUS).items())),
        "cases_by_expectation": dict(collections.Counter(c.expect for c in CORPUS)),
        "status_counts": dict(sorted(statuses.items())),
        "status_counts_by_expectation": {
            k: dict(sorted(v.items())) for k, v in by_expectation.items()
        },
        "status_counts_by_kind": {
            k: dict(sorted(v.items())) for k, v in sorted(statuses_by_kind.items())
        },
        "failing_cases": sum(len(v) for v in failures.values()),
        "failing_cases_by_kind": {k: len(v) for k, v in sorted(failures.items())},
        "row_count_changes": changed_counts(run.counts_before, run.counts_after),
        "row_count_changes_by_kind": run.count_changes_by_kind,
        "tables_whose_rows_changed": [
            t
            for t in sorted(set(run.contents_before) | set(run.contents_after))
            if run.contents_before.get(t) != run.contents_after.get(t)
        ],
        "seconds": round(seconds, 1),
        "seconds_by_kind": {k: round(v, 2) for k, v in seconds_by_kind.most_common()},
        "slowest_cases": {case_id: round(o.seconds, 3) for case_id, o in slowest},
        "failures": dict(sorted(failures.items())),
    }


def record(backend: str, summary: dict[str, Any]) -> None:
    recorded: dict[str, Any] = {}
    if ARTIFACT.exists():
        try:
            recorded = json.loads(ARTIFACT.read_text())
        except ValueError:
            recorded = {}
    recorded[backend] = summary
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(recorded, indent=2, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def corpus_run(app, database, backend) -> CorpusRun:
    """The whole corpus, once per database, against a freshly seeded store."""
    wipe(database.engine)
    started = time.perf_counter()
    with app.test_client(
        headers=bearer_for(database, "admin"),
        raise_server_exceptions=False,
        follow_redirects=False,
    ) as client:
        world = seed_world(client, database)
        counts_before = row_counts(database.engine)
        contents_before = table_contents(database.engine)
        results: dict[str, Outcome] = {}
        changes: dict[str, dict[str, str]] = {}
        counts = counts_before
        for kind, group in itertools.groupby(CORPUS, key=lambda case: case.kind):
            for case in group:
                results[case.id] = run_case(client, case, world)
            now = row_counts(database.engine)
            if now != counts:
                changes.setdefault(kind, {}).update(changed_counts(counts, now))
            counts = now
    run = CorpusRun(
        results=results,
        counts_before=counts_before,
        counts_after=row_counts(database.engine),
        contents_before=contents_before,
        contents_after=table_contents(database.engine),
        count_changes_by_kind=changes,
    )
    summary = summarise(run, time.perf_counter() - started)
    record(backend, summary)
    print(
        f"\nmalformed corpus on {backend}: {summary['corpus_size']} requests, statuses "
        f"{summary['status_counts']}, {summary['failing_cases']} failing, "
        f"{summary['seconds']} s (details in {ARTIFACT.relative_to(Path(PROJECT_ROOT))})"
    )
    return run


# --- the tests ----------------------------------------------------------------------------


def test_the_corpus_is_large_and_covers_every_operation():
    assert len(CORPUS) >= 300
    labels = collections.Counter(case.id.rsplit(" ", 1)[0] for case in CORPUS)
    thin = [op.label() for op in spec_operations() if labels[op.label()] < 5]
    assert not thin, f"operations with fewer than 5 malformed variants: {thin}"
    assert sum(case.expect == EXPECT_4XX for case in CORPUS) >= 300
    assert any(case.expect == EXPECT_2XX for case in CORPUS)


@pytest.mark.parametrize("case_id", [case.id for case in CORPUS], ids=str)
def test_malformed_request_gets_a_clean_answer(corpus_run, case_id):
    outcome = corpus_run.results[case_id]
    assert not outcome.problems, (
        f"{case_id}: status {outcome.status}; {'; '.join(outcome.problems)}; "
        f"body: {outcome.snippet!r}"
    )


def test_every_table_keeps_its_row_count(corpus_run):
    assert corpus_run.counts_after == corpus_run.counts_before, (
        f"row counts changed: {changed_counts(corpus_run.counts_before, corpus_run.counts_after)}"
        f"; by kind of case: {corpus_run.count_changes_by_kind}"
    )


def test_every_table_keeps_its_rows(corpus_run):
    """Nothing was updated either (a PATCH or DELETE that got through changes no count)."""
    changed = {
        table: len(set(corpus_run.contents_before[table]) ^ set(rows))
        for table, rows in corpus_run.contents_after.items()
        if rows != corpus_run.contents_before.get(table)
    }
    assert not changed, f"tables with changed rows (number of differing rows): {changed}"
