#!/bin/sh
# Makes sure a PostgreSQL server with pg_cron is installed (Debian/Ubuntu packages), PgBouncer, which the tests
# put in front of it as Supabase's poolers, and systemd-analyze, which checks the deployment example. Uses the installed major version when its pg_cron package exists, else
# the distribution's default PostgreSQL with its pg_cron.
set -eu

have_pg_cron() {
    for lib in /usr/lib/postgresql/*/lib/pg_cron.so; do
        [ -e "$lib" ] && return 0
    done
    return 1
}

have_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

have_systemd_analyze() {
    command -v systemd-analyze >/dev/null 2>&1
}

have_pg_cron && have_pgbouncer && have_systemd_analyze && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "bulk-sync needs PostgreSQL (14 or newer) with pg_cron, and its tests PgBouncer and systemd-analyze: install" \
        "postgresql-<major>-cron and pgbouncer or their equivalents" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

$sudo apt-get update -qq
if ! have_pgbouncer; then
    $sudo apt-get install -y -qq pgbouncer >/dev/null
fi
if ! have_systemd_analyze; then
    $sudo apt-get install -y -qq systemd >/dev/null
fi
have_pg_cron && exit 0
installed=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
if [ -n "$installed" ] && $sudo apt-get install -y -qq "postgresql-$installed-cron" >/dev/null; then
    have_pg_cron && exit 0
fi
default=$(apt-cache policy postgresql | awk '/Candidate:/ { print $2 }' | sed 's/[^0-9].*//')
if [ -z "$default" ]; then
    echo "no PostgreSQL package found in apt: install PostgreSQL with pg_cron by hand" >&2
    exit 1
fi
$sudo apt-get install -y -qq "postgresql-$default" "postgresql-$default-cron" >/dev/null
have_pg_cron
