"""Frames exactly shaped like each exchange's, and re-timing of captured frames.

Text is built by hand (not json.dumps) where exactness matters: Kraken's prices and
quantities are JSON numbers written from the decimal digits, never through float. Trade
amounts arrive as fixed-point integers (SimTrade) and are formatted with integer arithmetic:
these encoders run once per simulated trade.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from services.feed.simulator.market import SimTrade


@lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(ts_ns: int, digits: int = 6) -> str:
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    base = _second_text(seconds)  # strftime costs ~10 µs; trades share their second
    if digits == 0:
        return base + "Z"
    return f"{base}.{f'{frac:09d}'[:digits]}Z"


def number(value: Decimal) -> str:
    """A JSON number with the decimal's digits (no exponent, no float)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def plain(units: int, places: int) -> str:
    """units × 10^-places with exactly `places` decimals, no exponent (== format(Decimal, "f"))."""
    if units < 0:
        return "-" + plain(-units, places)
    text = str(units)
    if places <= 0:
        return text
    if len(text) <= places:
        text = "0" * (places + 1 - len(text)) + text
    return f"{text[:-places]}.{text[-places:]}"


def fixed8(units: int, places: int) -> str:
    """Eight decimals (Binance's format, == f"{Decimal:.8f}")."""
    if places <= 8:
        return plain(units * 10 ** (8 - places), 8)
    return f"{Decimal(units).scaleb(-places):.8f}"  # rounds like Decimal formatting does


def json_number(units: int, places: int) -> str:
    """The shortest JSON number with these digits (== number(Decimal))."""
    text = plain(units, places)
    return text.rstrip("0").rstrip(".") if places > 0 else text


# -- Binance ---------------------------------------------------------------------------------------


def binance_trade(trade: SimTrade, combined: bool = True) -> str:
    ms = trade.ts_ns // 1_000_000
    data = (
        f'{{"e":"trade","E":{ms + 1},"s":"{trade.native}","t":{trade.trade_id},'
        f'"p":"{fixed8(trade.price_units, trade.price_places)}",'
        f'"q":"{fixed8(trade.qty_units, trade.qty_places)}","T":{ms},'
        f'"m":{"false" if trade.taker_buy else "true"},"M":true}}'
    )
    if not combined:
        return data
    return f'{{"stream":"{trade.native.lower()}@trade","data":{data}}}'


def binance_ack(request_id: object) -> str:
    return json.dumps({"result": None, "id": request_id}, separators=(",", ":"))


# -- Kraken ----------------------------------------------------------------------------------------


def kraken_status(connection_id: int) -> str:
    return (
        '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
        f'"api_version":"v2","connection_id":{connection_id}}}]}}'
    )


KRAKEN_HEARTBEAT = '{"channel":"heartbeat"}'


def kraken_ack(symbol: str, ok: bool, time_in: int, time_out: int, req_id: object = None) -> str:
    if ok:
        body: dict[str, object] = {
            "method": "subscribe",
            "result": {"channel": "trade", "snapshot": True, "symbol": symbol},
            "success": True,
        }
    else:
        body = {
            "error": f"Currency pair not supported {symbol}",
            "method": "subscribe",
            "success": False,
            "symbol": symbol,
        }
    body.update({"time_in": rfc3339(time_in), "time_out": rfc3339(time_out)})
    if req_id is not None:
        body["req_id"] = req_id
    return json.dumps(body, separators=(",", ":"))


def kraken_trades(trades: list[SimTrade], kind: str = "update") -> str:
    items = ",".join(
        f'{{"symbol":"{t.native}","side":"{"buy" if t.taker_buy else "sell"}",'
        f'"price":{json_number(t.price_units, t.price_places)},'
        f'"qty":{json_number(t.qty_units, t.qty_places)},'
        f'"ord_type":"{"market" if t.trade_id % 3 else "limit"}",'
        f'"trade_id":{t.trade_id},"timestamp":"{rfc3339(t.ts_ns)}"}}'
        for t in trades
    )
    return f'{{"channel":"trade","type":"{kind}","data":[{items}]}}'


# -- Coinbase --------------------------------------------------------------------------------------


def coinbase_envelope(channel: str, sequence_num: int, now_ns: int, events: str) -> str:
    return (
        f'{{"channel":"{channel}","client_id":"","timestamp":"{rfc3339(now_ns, 9)}",'
        f'"sequence_num":{sequence_num},"events":{events}}}'
    )


def coinbase_trades_events(trades: list[SimTrade], kind: str = "update") -> str:
    # `side` is the maker's: a taker buy lifts a resting SELL order. Amounts are plain decimal strings
    # with the product's own decimals, as Coinbase sends them (never an exponent like "5E-8").
    items = ",".join(
        f'{{"trade_id":"{t.trade_id}","product_id":"{t.native}",'
        f'"price":"{plain(t.price_units, t.price_places)}","size":"{plain(t.qty_units, t.qty_places)}",'
        f'"side":"{"SELL" if t.taker_buy else "BUY"}","time":"{rfc3339(t.ts_ns)}"}}'
        for t in trades
    )
    return f'[{{"type":"{kind}","trades":[{items}]}}]'


def coinbase_subscriptions_events(subscriptions: dict[str, list[str]]) -> str:
    return json.dumps([{"subscriptions": subscriptions}], separators=(",", ":"))


def coinbase_heartbeat_events(now_ns: int, counter: int, uptime_s: float) -> str:
    seconds, frac = divmod(now_ns, 1_000_000_000)
    current = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f'[{{"current_time":"{current}.{frac:09d} +0000 UTC m=+{uptime_s:.9f}",'
        f'"heartbeat_counter":"{counter}"}}]'
    )


# -- re-timing captured frames ---------------------------------------------------------------------

_BINANCE_MS = re.compile(r'"([ET])":(\d{13})')
_RFC3339 = re.compile(r'"(timestamp|time|time_in|time_out)":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z"')
_COINBASE_CURRENT = re.compile(r'"current_time":"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d+)')
_SEQUENCE = re.compile(r'"sequence_num":\d+')


def _shift_rfc3339(match: re.Match[str], shift_ns: int) -> str:
    field, base, frac = match.group(1), match.group(2), match.group(3) or ""
    digits = len(frac) - 1 if frac else 0
    seconds = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    ns = seconds * 1_000_000_000 + (int(frac[1:].ljust(9, "0")[:9]) if frac else 0) + shift_ns
    return f'"{field}":"{rfc3339(ns, digits)}"'


def _shift_current(match: re.Match[str], shift_ns: int) -> str:
    base, frac = match.group(1), match.group(2)
    seconds = int(datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
    ns = seconds * 1_000_000_000 + int(frac.ljust(9, "0")[:9]) + shift_ns
    moved_s, moved_frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(moved_s, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f'"current_time":"{text}.{f"{moved_frac:09d}"[: len(frac)]}'


def retime(frame: str, shift_ns: int) -> str:
    """Move every exchange timestamp of a frame by shift_ns (a whole number of ms); keep all else."""
    shift_ms = shift_ns // 1_000_000
    shift_ns = shift_ms * 1_000_000
    frame = _BINANCE_MS.sub(lambda m: f'"{m.group(1)}":{int(m.group(2)) + shift_ms}', frame)
    frame = _RFC3339.sub(lambda m: _shift_rfc3339(m, shift_ns), frame)
    return _COINBASE_CURRENT.sub(lambda m: _shift_current(m, shift_ns), frame)


def renumber(frame: str, sequence_num: int) -> str:
    """Give a Coinbase envelope this connection's sequence number."""
    return _SEQUENCE.sub(f'"sequence_num":{sequence_num}', frame, count=1)


def capture_frame_role(exchange: str, frame: str) -> str:
    """`data` (served from a capture) or `control` (the simulator makes its own acks/status/heartbeats)."""
    head = frame[:64]
    if exchange == "binance":
        return "control" if head.startswith('{"result"') or head.startswith('{"id"') else "data"
    if exchange == "kraken":
        if head.startswith(('{"channel":"heartbeat"', '{"channel":"status"', '{"method"')) or (
            '"method":"subscribe"' in frame and '"success"' in frame
        ):
            return "control"
        return "data"
    if head.startswith(('{"channel":"heartbeats"', '{"channel":"subscriptions"')):
        return "control"
    return "data"
