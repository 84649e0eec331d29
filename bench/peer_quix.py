"""The peer comparison: the same 1-minute OHLCV over the same trades, computed by Quix Streams.

`python -m bench.peer_quix` alone: a throwaway broker, N synthetic trades written to
market.crypto.trades in K2's wire format, then the Quix app (bench/peer_quix_app.py, in its own
virtualenv) computes 1 m candles; its throughput and candles are compared with the reference
recomputation. `python -m bench` runs the same peer against the trades K2's normalizer produced
in the platform run and compares with K2's own candles.

The peer venv lives in K2_PEER_VENV (default ~/.cache/k2/peer-quix-venv) and is created on first
use from bench/peer-requirements.txt (PyPI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Sampler, ServiceProcess, format_table, write_results
from bench.reference import CandleKey, RefTrade, compare_with_float_peer, recompute_candles

HERE = Path(__file__).resolve().parent
APP = HERE / "peer_quix_app.py"
REQUIREMENTS = HERE / "peer-requirements.txt"
PEER_OUTPUT = "bench.quix.ohlcv"


def peer_venv() -> Path:
    return Path(os.environ.get("K2_PEER_VENV", Path.home() / ".cache" / "k2" / "peer-quix-venv"))


def ensure_peer_python() -> Path:
    """The peer venv's python, creating the venv (PyPI wheels) when missing."""
    venv = peer_venv()
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import quixstreams, confluent_kafka"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    return python


def progress_of(log_text: str) -> list[tuple[int, float]]:
    """(trades seen, unix time) pairs from the peer's progress lines."""
    out = []
    for line in log_text.splitlines():
        if line.startswith('{"n":'):
            try:
                data = json.loads(line)
                out.append((int(data["n"]), float(data["t"])))
            except (ValueError, KeyError):
                continue
    return out


def rate_of(progress: list[tuple[int, float]]) -> float | None:
    """Steady rate between the first and the last progress point (excludes start-up)."""
    if len(progress) < 2 or progress[-1][1] <= progress[0][1]:
        return None
    return (progress[-1][0] - progress[0][0]) / (progress[-1][1] - progress[0][1])


def run_peer(
    bootstrap: str,
    work_dir: Path,
    expected_trades: int,
    sampler: Sampler | None = None,
    timeout: float = 600.0,
    group: str | None = None,
) -> dict[str, Any]:
    """Run the Quix app over market.crypto.trades from the beginning until it has seen every trade."""
    python = ensure_peer_python()
    group = group or f"bench-quix-{int(time.time())}"
    every = max(expected_trades // 50, 500)
    env = {
        "PEER_BOOTSTRAP": bootstrap,
        "PEER_GROUP": group,
        "PEER_STATE_DIR": str(work_dir / "quix-state"),
        "PEER_OUTPUT": PEER_OUTPUT,
        "PEER_PROGRESS_EVERY": str(every),
        "PYTHONUNBUFFERED": "1",
    }
    proc = ServiceProcess(
        "peer_quix_app",
        env=env,
        log_dir=work_dir / "logs",
        name="peer-quix",
        # -I: the script's folder is not put on sys.path (bench/platform.py would shadow the stdlib's)
        argv=[str(python), "-I", str(APP)],
    )
    started = time.time()
    proc.start()
    if sampler is not None:
        sampler.watch("peer-quix", lambda: proc.pid)
    try:
        deadline = time.monotonic() + timeout
        last_n = 0
        while time.monotonic() < deadline:
            if not proc.running:
                raise RuntimeError(f"the Quix peer exited:\n{proc.output(4000)}")
            progress = progress_of(proc.output(tail=1_000_000))
            last_n = progress[-1][0] if progress else 0
            if last_n + every > expected_trades:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the Quix peer saw {last_n} of {expected_trades} trades in {timeout}s")
        done = time.time()
        time.sleep(3.0)  # its last exactly-once commit (commit interval 1 s) publishes the final windows
        if sampler is not None:
            sampler.sample_once()
        progress = progress_of(proc.output(tail=1_000_000))
    finally:
        proc.stop()
    return {
        "trades": expected_trades,
        "rate_trades_per_s": rate_of(progress),
        "wall_s_including_startup": round(done - started, 2),
        "group": group,
        "guarantee": "exactly-once",
        "numbers": "float",
    }


async def read_peer_candles(bootstrap: str, topic: str = PEER_OUTPUT) -> dict[CandleKey, dict[str, Any]]:
    from bench.topics import read_all

    out: dict[CandleKey, dict[str, Any]] = {}
    for record in await read_all(bootstrap, topic):
        exchange, symbol = record.key.decode().split(":", 1)
        value = json.loads(record.value)
        out[(exchange, symbol, "1m", int(value["start"]) * 1000)] = value
    return out


# ---------------------------------------------------------------------------------------------- standalone


async def _produce_trades(bootstrap: str, trades: list[RefTrade]) -> None:
    from aiokafka import AIOKafkaProducer

    from services.common.decimals import multiply
    from services.common.kafka import PRODUCER_DEFAULTS
    from services.common.schemas import Trade
    from services.common.topics import TRADES

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    await producer.start()
    try:
        pending = []
        for i, t in enumerate(trades):
            trade = Trade(
                t.exchange,
                t.symbol,
                t.symbol.replace("/", ""),
                t.trade_id,
                t.exchange_ts,
                t.exchange_ts + 1000,
                t.price,
                t.quantity,
                multiply(t.price, t.quantity),
                t.side,
                "bench",
                0,
                i,
            )
            pending.append(await producer.send(TRADES, trade.encode(), key=trade.key.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def standalone(n_trades: int) -> dict[str, Any]:
    from bench.synthetic import SyntheticMarket
    from deploy.kafka.broker import LocalBroker
    from services.common.kafka import ensure_topics
    from services.common.metrics import free_port

    market = SyntheticMarket(seed=11)
    start_us = (int(time.time()) - 3600) * 1_000_000
    trades = [t for f in market.frames(start_us, seconds=600, rate=n_trades / 600) for t in f.trades]
    with tempfile.TemporaryDirectory(prefix="k2-bench-peer-") as tmp:
        work = Path(tmp)
        broker = LocalBroker(
            work / "data", port=free_port(), controller_port=free_port(), exit_with_parent=True
        )
        broker.start()
        try:
            asyncio.run(ensure_topics(broker.bootstrap))
            asyncio.run(_produce_trades(broker.bootstrap, trades))
            sampler = Sampler(interval=1.0).start()
            peer = run_peer(broker.bootstrap, work, len(trades), sampler)
            sampler.stop()
            peer_candles = asyncio.run(read_peer_candles(broker.bootstrap))
        finally:
            broker.stop()
    reference = recompute_candles(trades, ["1m"])
    comparison = compare_with_float_peer(reference, peer_candles)
    return {"peer": peer, "processes": sampler.table(), "comparison_with_reference": comparison}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_quix", description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = standalone(args.trades)
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["command"] = f"python -m bench.peer_quix --trades {args.trades}"
    print(format_table([{k: v for k, v in result["peer"].items()}]))
    cmp_ = result["comparison_with_reference"]
    print(format_table([{"field": f, **c} for f, c in cmp_["per_field"].items()]))
    print(
        f"compared {cmp_['compared']} candles; exactly equal {cmp_['candles_exactly_equal']}; "
        f"only reference {cmp_['only_k2']} (windows Quix had not closed); only peer {cmp_['only_peer']}"
    )
    print(f"written to {write_results('peer_quix', result)}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
