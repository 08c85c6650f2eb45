"""The deployment example: docs/deploy/bulk-sync-runner.service passes `systemd-analyze verify` (on a copy whose
ExecStart names the bulk-sync installed here), its command line is one the runner accepts, and it stops the way the
runner needs: SIGTERM, with longer to finish than a lease lasts."""

import re
import subprocess
import sys
from pathlib import Path

import psycopg

from runner.cli import parser

UNIT = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "bulk-sync-runner.service"


def _settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z]\w*=", line))


def test_the_systemd_unit_verifies_and_outlasts_a_lease(db: psycopg.Connection, tmp_path) -> None:
    unit = UNIT.read_text()
    settings = _settings(unit)
    program, *args = settings["ExecStart"].split()
    installed = Path(sys.executable).parent / "bulk-sync"
    assert installed.exists() and program.endswith("/bin/bulk-sync")
    copy = tmp_path / UNIT.name
    copy.write_text(unit.replace(f"ExecStart={program} ", f"ExecStart={installed} "))
    verified = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=120)
    # systemd-analyze exits 0 on settings it ignores, but says so: silence is the pass
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", ""), verified
    broken = tmp_path / "broken.service"
    broken.write_text(copy.read_text().replace("Restart=on-failure", "Restart=on-failures"))
    said = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert "on-failures" in said.stderr  # the check above can fail
    command = parser().parse_args(args)
    assert command.func.__name__ == "_run" and command.metrics_port is not None
    assert settings["Restart"] == "on-failure" and settings["KillSignal"] == "SIGTERM"
    assert settings["EnvironmentFile"].startswith("/etc/")  # secrets in a file, not in the unit
    lease = db.execute("select lease_seconds from bulk_sync.settings").fetchone()[0]
    assert int(settings["TimeoutStopSec"]) > lease
