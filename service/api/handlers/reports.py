"""/api/v1/reports: stock valuation and movement summary, as JSON or CSV (managers only).

Both read from the read replica when one is configured and current (``X-Data-Source``).
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from service import db
from service.api import transaction
from service.api.pagination import SortKey, next_link, paginate
from service.api.params import timestamp_parameter
from service.api.responses import CSV, json_response, negotiate
from service.domain import reports
from service.formats import format_timestamp
from service.models import Product
from service.problems import BadRequestProblem, parameter_error

# The by-product JSON summary comes in pages, in the product list's SKU order.
PRODUCT_PAGES = SortKey("movements-by-product", Product.sku_key).then_by(Product.id)


def _respond(report: reports.Report, media_type: str, **more: Any):
    """The report as CSV or as JSON (with ``more`` fields)."""
    if media_type == CSV:
        return Response(
            reports.to_csv(report),
            status=200,
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{report.filename()}"',
                "Vary": "Accept",
            },
        )
    return json_response({**report.as_json(), **more}, 200, {"Vary": "Accept"})


@transaction.replica_read
def get_valuation_report(group_by: str = "category", as_of: str | None = None):
    media_type = negotiate(request.headers.get("Accept"))
    report = reports.valuation(db.session(), group_by, timestamp_parameter(as_of, "as_of"))
    return _respond(report, media_type)


# `from` is a Python keyword: connexion passes it in **params. (Its pythonic_params option
# would rename it `from_`, but API-wide, renaming every builtin-named parameter as well.)
@transaction.replica_read
def get_movement_summary(
    group_by: str = "day",
    to: str | None = None,
    product_id: int | None = None,
    location_id: int | None = None,
    kind: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    **params: Any,
):
    media_type = negotiate(request.headers.get("Accept"))
    paged = group_by == "product" and media_type != CSV
    if cursor is not None and not paged:
        raise BadRequestProblem(
            "Only the JSON summary by product comes in pages.",
            errors=[parameter_error("cursor", "query", "Only with group_by=product, as JSON.")],
        )
    start, end = reports.movement_period(
        timestamp_parameter(params.get("from"), "from"), timestamp_parameter(to, "to")
    )
    if start >= end:
        raise BadRequestProblem(
            "The period is empty: from must be earlier than to.",
            errors=[
                parameter_error(
                    "from",
                    "query",
                    f"Must be earlier than to ({format_timestamp(end)}).",
                )
            ],
        )
    if paged:
        return _product_page(start, end, product_id, location_id, kind, limit, cursor)
    report = reports.movement_summary(
        db.session(),
        group_by,
        start,
        end,
        product_id=product_id,
        location_id=location_id,
        kind=kind,
    )
    return _respond(report, media_type, next_cursor=None)


def _product_page(start, end, product_id, location_id, kind, limit: int, cursor: str | None):
    """One page of the by-product summary; its totals sum the page's rows."""
    start, end, stmt = reports.product_movements(
        db.session(), start, end, product_id=product_id, location_id=location_id, kind=kind
    )
    page = paginate(db.session(), stmt, sort=PRODUCT_PAGES, limit=limit, cursor=cursor)
    report = reports.movement_report("product", start, end, [r._mapping for r in page.items])
    body = {**report.as_json(), "next_cursor": page.next_cursor}
    return json_response(body, 200, {"Vary": "Accept", **next_link(request.url, page.next_cursor)})
