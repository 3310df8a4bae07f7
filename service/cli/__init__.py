"""The ``storekeeper`` command: serve the API and manage its database."""

from __future__ import annotations

import os

import click

from service import migrate
from service.cli.common import redacted
from service.cli.demo import demo as demo_command
from service.cli.products import export_group, import_group
from service.cli.reports import report
from service.cli.stock import stock as stock_group
from service.cli.users import users as users_group
from service.cli.worker import worker as worker_command
from service.config import Settings


@click.group()
def main() -> None:
    """Storekeeper inventory service."""


@main.command()
@click.option(
    "--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="HOST or 127.0.0.1"
)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8080")),
    show_default="PORT or 8080",
)
@click.option(
    "--migrate/--no-migrate", "run_migrations", default=True, help="Upgrade the database first."
)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=True,
    show_default=True,
    help="Deliver webhooks from this process too (the embedded default); in production run "
    "`storekeeper worker` beside the servers instead.",
)
def serve(host: str, port: int, run_migrations: bool, reload: bool, with_worker: bool) -> None:
    """Serve the API with uvicorn (one process; use gunicorn for production)."""
    import threading

    import uvicorn

    if run_migrations:
        migrate.upgrade()
    stop = threading.Event()
    if with_worker:
        from service.cli.worker import run_worker

        threading.Thread(
            target=run_worker,
            args=(Settings.from_env(),),
            kwargs={"concurrency": 4, "stop": stop},
            name="webhook-worker",
            daemon=True,
        ).start()
    click.echo(f"Storekeeper on http://{host}:{port}  (docs: http://{host}:{port}/apidocs/)")
    try:
        uvicorn.run("service.asgi:app", host=host, port=port, reload=reload, proxy_headers=True)
    finally:
        stop.set()


@main.group()
def db() -> None:
    """Database schema (alembic)."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the database named by DATABASE_URL to REVISION (default: head)."""
    migrate.upgrade(revision=revision)
    click.echo(f"upgraded {redacted(Settings.from_env().database_url)} to {revision}")


@db.command()
@click.argument("revision", default="-1")
def downgrade(revision: str) -> None:
    """Downgrade the database to REVISION (default: one step back; 'base' empties it)."""
    migrate.downgrade(revision=revision)
    click.echo(f"downgraded to {revision}")


@db.command()
def current() -> None:
    """Print the database's current revision."""
    migrate.current()


main.add_command(demo_command)
main.add_command(stock_group)
main.add_command(users_group)
main.add_command(report)
main.add_command(import_group)
main.add_command(export_group)
main.add_command(worker_command)


if __name__ == "__main__":
    main()
