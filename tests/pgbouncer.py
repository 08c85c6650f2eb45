"""PgBouncer (Debian's package) in front of a test cluster: the stand-in for Supabase's poolers. In transaction mode
it behaves as Supavisor's port 6543 does (a server connection only for the length of a transaction, no prepared
statements); in session mode as its port 5432. It refuses to run as root, so as root it runs as postgres, as the
test clusters do."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from runner.localpg import free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """A pooler on 127.0.0.1:`port` for every database of the server at host:server_port, as user postgres.
    server_round_robin hands each transaction the server connection idle the longest, so that consecutive
    statements of one client land on different server connections whenever there are several: the worst case."""

    def __init__(self, directory: Path, server_port: int, mode: str = "transaction", pool_size: int = 3) -> None:
        self.directory = directory
        self.port = free_port()
        self.server_port = server_port
        self.mode = mode
        self.pool_size = pool_size
        self.process: subprocess.Popen | None = None

    def start(self) -> "PgBouncer":
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory / "users.txt"}
pool_mode = {self.mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_round_robin = 1
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {self.directory / "pgbouncer.log"}
"""
        )
        command = [BINARY, str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            for path in self.directory.iterdir():
                shutil.chown(path, "postgres")
            path = self.directory
            while path != path.parent:
                path.chmod(path.stat().st_mode | 0o001)
                path = path.parent
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        deadline = time.monotonic() + 30  # guards a hang only
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.process.stderr.read().decode()}") from None
                time.sleep(0.05)

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
