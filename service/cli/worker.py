"""``storekeeper worker``: deliver webhooks (service/domain/delivery.py) until stopped.

Several workers may run, on one machine or many: deliveries are leased in the database
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so none is sent twice at once, and one a killed
worker was sending is sent again once its lease runs out. SIGTERM or SIGINT finishes the
round in progress, then exits 0. Settings come from the environment (service/config.py).
"""

from __future__ import annotations

import logging
import signal
import threading

import click
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.db import Database
from service.domain.delivery import Deliverer

logger = logging.getLogger("storekeeper.worker")
# After a database error, wait this long before the next round (it may be down).
ERROR_PAUSE_S = 2.0


def run_worker(
    settings: Settings, *, concurrency: int, stop: threading.Event, once: bool = False
) -> None:
    """Rounds of delivery until ``stop`` is set (or one round with ``once``)."""
    database = Database.from_settings(settings, replica=False)
    deliverer = Deliverer(database, settings.webhooks, concurrency=concurrency)
    logger.info("webhook worker %s started (%d at a time)", deliverer.owner, concurrency)
    try:
        while not stop.is_set():
            try:
                sent = deliverer.run_once()
            except SQLAlchemyError as exc:
                logger.warning("worker round failed (%s); retrying", type(exc).__name__)
                stop.wait(ERROR_PAUSE_S)
                continue
            if once:
                break
            if not sent:
                stop.wait(settings.webhooks.poll_interval_s)
    finally:
        deliverer.close()
        database.dispose()
        logger.info("webhook worker %s stopped", deliverer.owner)


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Deliveries sent at the same time.",
)
@click.option("--once", is_flag=True, help="One round, then exit (cron, tests).")
def worker(concurrency: int, once: bool) -> None:
    """Deliver webhooks until stopped (DATABASE_URL and the WEBHOOK_* settings)."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_worker(settings, concurrency=concurrency, stop=stop, once=once)
