"""Run the REAL production server (scripts/serve-production.sh) for live tests and benchmarks.

``live_server(database_url)`` starts ``scripts/serve-production.sh`` (alembic upgrade, then
gunicorn with uvicorn workers) on a free port of 127.0.0.1 in its own session (process
group), waits until ``GET /health/ready`` answers 200 from it, yields a :class:`LiveServer`,
and on exit stops the whole process group: SIGTERM (gunicorn's graceful shutdown), then
SIGKILL for anything left. The server's output goes to ``log_path`` (default: a temporary
file, removed on exit; failures to start quote its tail). It depends on neither pytest nor
the application code, so ``scripts/bench_stock.py`` uses it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVE_SCRIPT = ROOT / "scripts" / "serve-production.sh"


class ServerFailedToStart(RuntimeError):
    pass


def venv_bin() -> Path:
    """The bin/ holding storekeeper and gunicorn: the checkout's .venv, else this Python's."""
    local = ROOT / ".venv" / "bin"
    if (local / "gunicorn").exists():
        return local
    return Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    database_url: str
    process: subprocess.Popen
    log_path: Path
    # Authorization for an admin minted straight in the database once the server is ready.
    headers: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None


def _start(database_url: str, port: int, log_path: Path, env_extra: dict[str, str]):
    env = dict(os.environ)
    env.pop("VENV", None)  # serve-production.sh would put that venv first; PATH decides here
    env.update(
        {
            "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            **env_extra,
        }
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["bash", str(SERVE_SCRIPT)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown reaches every worker
        )


def admin_headers(database_url: str) -> dict[str, str]:
    """A new admin user and access token in the server's (migrated) database."""
    from service.db import Database
    from service.domain.accounts import hash_password, issue_access_token
    from service.models import User

    database = Database(database_url)
    try:
        with database.transaction() as session:
            user = User(
                email=f"live-admin-{uuid.uuid4().hex[:8]}@example.com",
                name="Live admin",
                role="admin",
                password_hash=hash_password(uuid.uuid4().hex),
            )
            session.add(user)
            session.flush()
            secret, _ = issue_access_token(session, user)
    finally:
        database.dispose()
    return {"Authorization": f"Bearer {secret}"}


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not server.alive():
                raise ServerFailedToStart(
                    f"the server exited with {server.process.returncode} before becoming "
                    f"ready; log:\n{server.log_tail(120)}"
                )
            try:
                if client.get(f"{server.base_url}/health/ready").status_code == 200:
                    # Answered by our server, not by someone else who took the port: ours runs.
                    time.sleep(0.2)
                    if server.alive():
                        return
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise ServerFailedToStart(
                    f"GET {server.base_url}/health/ready did not answer 200 within "
                    f"{timeout:.0f} s; log:\n{server.log_tail(120)}"
                )
            time.sleep(0.25)


def stop(process: subprocess.Popen, grace: float = 25.0) -> None:
    """SIGTERM the server's process group, wait for the master, then SIGKILL what is left."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=10)
    # Workers a killed master left behind, if any.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def live_server(
    database_url: str,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    log_path: Path | None = None,
    attempts: int = 3,
) -> Iterator[LiveServer]:
    """The production server on ``database_url`` (migrated on start), stopped on exit."""
    env_extra = {"WEB_CONCURRENCY": str(workers), **(env or {})}
    own_log = log_path is None  # a temporary log of ours: removed on exit
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="storekeeper-live-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    server: LiveServer | None = None
    try:
        for attempt in range(1, attempts + 1):
            port = free_port()
            process = _start(database_url, port, log_path, env_extra)
            server = LiveServer(f"http://127.0.0.1:{port}", database_url, process, log_path)
            try:
                _wait_ready(server, ready_timeout)
                server.headers = admin_headers(database_url)
                break
            except ServerFailedToStart:
                stop(process)
                # Another process may have taken the free port first: try another one.
                if attempt == attempts or "Address already in use" not in server.log_text():
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            stop(server.process)
        if own_log:
            log_path.unlink(missing_ok=True)
