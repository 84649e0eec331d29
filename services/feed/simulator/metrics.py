"""Prometheus metrics of the exchange simulator (names `k2_simulator_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("k2_simulator_connections", "Open WebSocket connections", ["exchange"])
FRAMES = Counter("k2_simulator_frames_sent_total", "Frames sent", ["exchange"])
TRADES = Counter("k2_simulator_trades_sent_total", "Trades sent (counted once per connection)", ["exchange"])
FAULTS = Counter("k2_simulator_faults_total", "Faults injected on command", ["fault", "exchange"])
SLOW_CLIENTS = Counter(
    "k2_simulator_slow_clients_total", "Connections closed because they read too slowly", ["exchange"]
)
