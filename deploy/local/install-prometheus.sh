#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's packages (local mode and the deploy tests need them).
# Idempotent; needs root (or sudo). Used by `task setup` / .ci/run.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package enables a system-wide Prometheus on :9090 where an init system runs; K2 starts its own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
prometheus --version | head -1
