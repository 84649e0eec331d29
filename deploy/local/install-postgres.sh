#!/usr/bin/env bash
# Install the PostgreSQL server binaries from Debian's packages (the PostgreSQL catalog tests start a
# throwaway server from them: deploy/local/postgres.py). Idempotent; needs root (or sudo).
# Used by .ci/run. Nothing here configures or starts a database.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# `postgresql` is the distribution's supported major version (Debian 12: 15); it creates the unprivileged
# `postgres` system user that the test servers run as when K2 runs as root (initdb/postgres refuse root).
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package may start a system-wide cluster on :5432; K2 starts its own, so stop and disable that one.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
ls /usr/lib/postgresql/*/bin/postgres
