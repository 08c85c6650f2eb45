"""A private local PostgreSQL cluster with pg_cron preloaded (for the demo and benchmarks).

initdb and postgres refuse to run as root, so as root the server runs as the postgres user. The major version is
never hard-coded: the newest installed PostgreSQL that ships pg_cron is used."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

_ROOT = Path("/usr/lib/postgresql")


def bindir() -> Path:
    """The bin/ of the newest installed PostgreSQL major that ships pg_cron.so, else pg_config's."""
    majors = sorted((p for p in _ROOT.glob("*") if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
    for major in majors:
        if (major / "lib" / "pg_cron.so").exists() and (major / "bin" / "pg_ctl").exists():
            return major / "bin"
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
        if (found / "pg_ctl").exists() and (found.parent / "lib" / "pg_cron.so").exists():
            return found
    raise FileNotFoundError(
        "no PostgreSQL server with pg_cron found: install postgresql-<major> and postgresql-<major>-cron"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A cluster under `directory` (data, socket and log), listening on 127.0.0.1:`port`."""

    def __init__(
        self, directory: Path, port: int | None = None, options: tuple[str, ...] = (), bin: Path | None = None
    ) -> None:
        self.directory = directory.resolve()
        self.data = self.directory / "data"
        self.port = port or free_port()
        self.options = (
            "-c shared_preload_libraries=pg_cron",
            "-c cron.database_name=postgres",
            "-c cron.use_background_workers=on",
            "-c max_worker_processes=32",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            *options,
        )
        self._bin = bin or bindir()
        self.applied: list[str] = []

    def _run(self, *args: str) -> None:
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd="/")

    def _hand_to_postgres(self) -> None:
        if os.geteuid() != 0:
            return
        shutil.chown(self.directory, "postgres")
        path = self.directory
        while path != path.parent:
            path.chmod(path.stat().st_mode | 0o001)
            path = path.parent

    def start(self) -> "LocalCluster":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._hand_to_postgres()
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(
            "pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.directory / "postgres.log"),
            "-o", " ".join((f"-p {self.port}", *self.options)),
        )  # fmt: skip
        return self

    def restart(self, mode: str = "immediate") -> None:
        """Restarts the server; `immediate` is a crash as far as the database is concerned."""
        self._run(
            "pg_ctl", "restart", "-w", "-m", mode, "-D", str(self.data), "-l", str(self.directory / "postgres.log")
        )

    def running(self) -> int | None:
        """The pid of this cluster's server when one runs (its postmaster.pid names a live process), else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def create_database(self, dbname: str, fresh: bool = False) -> str:
        """Creates `dbname` unless it exists (fresh: drops it first), migrates it; returns its connection string."""
        import psycopg
        from psycopg import sql

        from runner.migrate import migrate

        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            if fresh:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
            if not admin.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone():
                admin.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        with psycopg.connect(self.dsn(dbname)) as conn:
            self.applied = migrate(conn)
        return self.dsn(dbname)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
