"""Finding the local PostgreSQL server binaries that have pg_cron (never a hard-coded major version)."""

import shutil
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
        if (found / "pg_ctl").exists():
            return found
    raise FileNotFoundError(
        "no PostgreSQL server with pg_cron found: install postgresql-<major> and postgresql-<major>-cron"
    )
