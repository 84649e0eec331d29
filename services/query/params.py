"""Request parameters: parsing and validation (every failure is a 422 with a clear message).

Nothing a client sends ever reaches SQL as text: values are validated here and then bound as
query parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson
from fastapi import HTTPException

from services.common.instruments import EXCHANGES

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,15}/[A-Z0-9]{1,15}$")
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def parse_time(value: str | None, name: str) -> datetime | None:
    """ISO-8601 (naive = UTC; a bare date is its midnight) or epoch seconds / ms / µs by magnitude."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if _NUMBER_RE.match(text):
            number = float(text)
            magnitude = abs(number)
            seconds = number if magnitude < 1e11 else number / 1e3 if magnitude < 1e14 else number / 1e6
            parsed = datetime.fromtimestamp(seconds, tz=UTC)
        else:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise unprocessable(f"{name}={value!r} is not an ISO-8601 time or an epoch number") from None
    if not 1970 <= parsed.year <= 9998:
        raise unprocessable(f"{name}={value!r} is out of range")
    return parsed


def to_us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def start_us(self) -> int:
        return to_us(self.start)

    @property
    def end_us(self) -> int:
        return to_us(self.end)


def time_range(start: str | None, end: str | None, max_days: float) -> TimeRange:
    """[start, end); a missing end is now, a missing start is end minus the range cap."""
    parsed_end = parse_time(end, "end") or datetime.now(UTC)
    cap = timedelta(days=max_days)
    parsed_start = parse_time(start, "start") or parsed_end - cap
    if parsed_start >= parsed_end:
        raise unprocessable(
            f"start ({parsed_start.isoformat()}) must be before end ({parsed_end.isoformat()})"
        )
    if parsed_end - parsed_start > cap:
        raise unprocessable(f"the time range exceeds the cap of {max_days:g} days; narrow start/end")
    return TimeRange(parsed_start, parsed_end)


def check_exchange(exchange: str | None) -> str | None:
    if exchange is None:
        return None
    if exchange not in EXCHANGES:
        raise unprocessable(f"unknown exchange {exchange!r}; one of {', '.join(EXCHANGES)}")
    return exchange


def check_symbol(symbol: str | None) -> str | None:
    if symbol is None:
        return None
    if not SYMBOL_RE.match(symbol):
        raise unprocessable(f"symbol {symbol!r} is not a canonical BASE/QUOTE symbol such as BTC/USDT")
    return symbol


def parse_as_of(value: str | None) -> int | datetime | None:
    """An integer is a snapshot id; anything else must be an ISO-8601 time."""
    if value is None or value == "":
        return None
    text = value.strip()
    if re.fullmatch(r"-?\d{1,19}", text):
        number = int(text)
        if not -(2**63) <= number < 2**63:
            raise unprocessable(f"as_of={value!r} is not a snapshot id")
        return number
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise unprocessable(f"as_of={value!r} is neither a snapshot id nor an ISO-8601 time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_day(value: str) -> date:
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise unprocessable(f"date {value!r} is not a YYYY-MM-DD date") from None
    if not 1970 <= parsed.year <= 9998:
        raise unprocessable(f"date {value!r} is out of range")
    return parsed


class CursorCodec:
    """Opaque, signed keyset cursors: base64url(JSON state) + '.' + HMAC-SHA256 (truncated)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, payload: bytes) -> str:
        digest = hmac.new(self.secret, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def encode(self, state: list) -> str:
        payload = base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")
        return f"{payload}.{self._sign(payload.encode())}"

    def decode(self, cursor: str, query_hash: str) -> list:
        """The state inside a cursor made by this service for this same query, else 422."""
        payload, sep, signature = cursor.partition(".")
        if not sep or len(cursor) > 2048 or not hmac.compare_digest(self._sign(payload.encode()), signature):
            raise unprocessable("invalid cursor")
        try:
            state = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            raise unprocessable("invalid cursor") from None
        if not isinstance(state, list) or not state or state[0] != query_hash:
            raise unprocessable("the cursor belongs to a different query")
        return state


def query_hash(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()[:16]
