"""Throwaway PostgreSQL clusters of the tests' own: a primary, and streaming replicas of it.

``postgres_bin_or_skip()`` finds ``initdb``/``pg_ctl`` (the newest /usr/lib/postgresql/*/bin,
else ``PATH``) and checks that they can run (as the ``postgres`` OS user via ``runuser`` when
the tests run as root); without them the test is skipped locally and fails with CI=true.
:class:`PgCluster` runs one cluster in a temporary directory on a free port of 127.0.0.1:
``init``/``start``/``stop`` (immediate)/``freeze``/``thaw``/``destroy``; :meth:`PgCluster.replica`
makes a hot standby of a running one with ``pg_basebackup -R`` (streaming replication).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.live_server import free_port


def skip_or_fail(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: tests on a private PostgreSQL cluster may not be skipped in CI")
    pytest.skip(reason)


def postgres_bin() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path)) or (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def postgres_bin_or_skip() -> Path:
    """The server binaries' directory, or skip (fail in CI) when they cannot be run here."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        skip_or_fail("no PostgreSQL server binaries (initdb, pg_ctl) found")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root without a 'postgres' OS user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            skip_or_fail("running as root without runuser")
    assert bin_dir is not None
    return bin_dir


def _parent_pid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="storekeeper-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.frozen: list[int] = []
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"{self.log_tail()}"
            )
        return result

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def init(self) -> None:
        # initdb's pg_hba.conf with -A trust also trusts local replication connections.
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c wal_level=replica -c max_wal_senders=5"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def replica(self) -> PgCluster:
        """A hot standby of this (running) cluster, streaming from it; not started yet.

        ``pg_basebackup -R`` copies the data directory and writes ``standby.signal`` and the
        ``primary_conninfo`` that points back here.
        """
        standby = PgCluster(self.bin_dir)
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        return standby

    def stop(self) -> None:
        """The harshest stop: every process of the cluster quits at once, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def freeze(self) -> None:
        """SIGSTOP the postmaster (it forks no more), then every process it started."""
        postmaster = self.postmaster()
        os.kill(postmaster, signal.SIGSTOP)
        self.frozen = [postmaster]
        for pid in os.listdir("/proc"):
            if pid.isdigit() and _parent_pid(pid) == postmaster:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGSTOP)
                    self.frozen.append(int(pid))

    def thaw(self) -> None:
        for pid in reversed(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def destroy(self) -> None:
        self.thaw()
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
