"""Every user's mistake, in every verb, is one line on stderr and exit 2: never a traceback."""

import os
from pathlib import Path

import psycopg
import pytest

from runner.localpg import LocalCluster
from tests.jobs import login
from tests.processes import cli

ARGUMENTS = {
    "unknown verb": ["nosuchverb"],
    "unknown option": ["status", "--bogus"],
    "negative limit": ["jobs", "--limit", "-1"],
    "limit not a number": ["jobs", "--limit", "many"],
    "negative interval": ["status", "--watch", "--interval", "-1"],
    "zero interval": ["status", "--watch", "--interval", "0"],
    "since overflows": ["timeline", "--since", "99999999d", "--out", "x.svg"],
    "since not a time": ["timeline", "--since", "yesterday", "--out", "x.svg"],
    "out missing": ["timeline"],
    "metrics port out of range": ["run", "--metrics-port", "99999"],
    "webhook port zero": ["run", "--webhook-port", "0"],
    "one connection": ["run", "--db-connections", "0"],
    "no concurrency": ["run", "--concurrency", "0"],
    "demo port": ["demo", "--port", "70000"],
    "demo orders": ["demo", "--orders-per-day", "0"],
}


def _one_line(result, *expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("args", ARGUMENTS.values(), ids=ARGUMENTS.keys())
def test_bad_arguments_are_one_line_naming_the_verb(args: list[str], dsn: str) -> None:
    result = cli(*args, dsn=dsn)
    verb = f"bulk-sync {args[0]}" if args[0] != "nosuchverb" else "bulk-sync"
    _one_line(result, f"{verb}: ", f"(see {verb} --help)")


def test_an_unmigrated_database_says_migrate_first(new_database, tmp_path: Path) -> None:
    url = new_database("unmigrated")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))} | {"DATABASE_URL": url}
    for args in (["status"], ["jobs"], ["timeline", "--out", str(tmp_path / "x.svg")], ["run", "--until-idle"]):
        _one_line(cli(*args, env=env | {"SHOP_DE_TOKEN": "x"}), "run bulk-sync migrate first")


def test_a_role_without_grants_is_told_which_role_it_needs(db: psycopg.Connection, dsn: str) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    login(db, dsn, "bulk_sync_reader").close()  # a login granted only the reader role
    reader = dsn.replace(f"user={db.info.user}", "user=bulk_sync_reader_login")
    for args, role in ((["jobs"], "bulk_sync_operator"), (["run", "--until-idle"], "bulk_sync_runner")):
        _one_line(cli(*args, env={**os.environ, "DATABASE_URL": reader, "SHOP_DE_TOKEN": "x"}),
                  "permission denied", f"granted {role}")  # fmt: skip


def test_bad_urls_paths_and_shops_are_one_line(db: psycopg.Connection, dsn: str, tmp_path: Path) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    _one_line(cli("status", "--database-url", "not a url", dsn=dsn), "DATABASE_URL is not a connection string")
    _one_line(cli("timeline", "--out", str(tmp_path / "no" / "such" / "x.svg"), dsn=dsn), "does not exist")
    _one_line(cli("timeline", "--shop", "QQ", "--out", str(tmp_path / "x.svg"), dsn=dsn), "unknown shop 'QQ'", "DE")
    _one_line(cli("jobs", "--shop", "qq", dsn=dsn), "unknown shop 'qq': registered are DE")
    assert cli("jobs", "--shop", "de", dsn=dsn).returncode == 0  # codes are upper case: de is DE
    env = {**os.environ, "DATABASE_URL": dsn, "SHOP_DE_TOKEN": "x", "SHOP_DE_URL": "not a url"}
    _one_line(cli("run", "--until-idle", env=env), "not an http(s) URL: SHOP_DE_URL='not a url'")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("select bulk_sync.cancel_jobs('')")
    assert raised.value.diag.message_primary == "unknown shop: '' (empty)"


def test_a_second_demo_while_one_runs_says_so(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "demo" / "postgres") as cluster:
        result = cli("demo", "--dir", str(tmp_path / "demo"), env=dict(os.environ))
        _one_line(result, f"a demo database runs in {tmp_path / 'demo'} already", f"pid {cluster.running()}",
                  f"demo --stop --dir {tmp_path / 'demo'}")  # fmt: skip
        assert (cluster.data / "PG_VERSION").exists()  # untouched
