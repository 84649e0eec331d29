"""One candle's running aggregate, and its compact encoding for the state changelog."""

from __future__ import annotations

from decimal import Decimal

import orjson

from services.common.decimals import EXACT, divide
from services.common.schemas import TIMEFRAMES, Candle, Trade, trade_order_key

OrderKey = tuple[int, int, int | str]
_add = EXACT.add  # sums of decimal(38,18) values never round in the 100-digit context


class CandleState:
    """Running OHLCV of one (exchange, symbol, timeframe, window_start).

    `last_offset` is the highest offset of the source partition applied to this candle: a trade
    re-delivered after a crash (offset <= last_offset) is skipped, which makes applying idempotent.
    `revision` is the last final revision published (-1: none yet); `pending` means the current
    content has not been published as a final candle yet (set on close and by late trades).
    """

    __slots__ = (
        "buy",
        "close",
        "close_key",
        "closed",
        "count",
        "end",
        "exchange",
        "first_ts",
        "high",
        "last_offset",
        "last_ts",
        "live_sent",
        "low",
        "open",
        "open_key",
        "pending",
        "quote_volume",
        "revision",
        "sell",
        "start",
        "symbol",
        "timeframe",
        "version",
        "volume",
    )

    def __init__(self, exchange: str, symbol: str, timeframe: str, start: int) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.timeframe = timeframe
        self.start = start
        self.end = start + TIMEFRAMES[timeframe]
        self.open = self.high = self.low = self.close = Decimal(0)
        self.open_key: OrderKey = (0, 0, 0)
        self.close_key: OrderKey = (0, 0, 0)
        self.volume = self.quote_volume = self.buy = self.sell = Decimal(0)
        self.count = 0
        self.first_ts = self.last_ts = 0
        self.last_offset = -1
        self.revision = -1
        self.closed = False
        self.pending = False
        self.version = 0  # in memory only: bumped by every applied trade
        self.live_sent = 0.0  # in memory only: monotonic time of the last live update

    def apply(self, trade: Trade, order: OrderKey, offset: int) -> None:
        price = trade.price
        if self.count == 0:
            self.open = self.high = self.low = self.close = price
            self.open_key = self.close_key = order
            self.first_ts = self.last_ts = trade.exchange_ts
        else:
            if order < self.open_key:
                self.open, self.open_key = price, order
            if order > self.close_key:
                self.close, self.close_key = price, order
            if price > self.high:
                self.high = price
            if price < self.low:
                self.low = price
            ts = trade.exchange_ts
            if ts < self.first_ts:
                self.first_ts = ts
            if ts > self.last_ts:
                self.last_ts = ts
        qty = trade.quantity
        self.volume = _add(self.volume, qty)
        self.quote_volume = _add(self.quote_volume, trade.quote_quantity)
        if trade.side == "BUY":
            self.buy = _add(self.buy, qty)
        else:
            self.sell = _add(self.sell, qty)
        self.count += 1
        if offset > self.last_offset:
            self.last_offset = offset
        self.version += 1

    def to_candle(self, revision: int) -> Candle:
        return Candle(
            exchange=self.exchange,
            symbol=self.symbol,
            timeframe=self.timeframe,
            window_start=self.start,
            window_end=self.end,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            quote_volume=self.quote_volume,
            trade_count=self.count,
            vwap=divide(self.quote_volume, self.volume),
            buy_volume=self.buy,
            sell_volume=self.sell,
            first_trade_ts=self.first_ts,
            last_trade_ts=self.last_ts,
            revision=revision,
        )

    @property
    def key(self) -> str:
        """Same text as Candle.key: <exchange>:<symbol>:<timeframe>:<window_start>."""
        return f"{self.exchange}:{self.symbol}:{self.timeframe}:{self.start}"

    def encode(self) -> bytes:
        """State for the changelog: decimals as exact text (str() of a Decimal round-trips exactly)."""
        return orjson.dumps(
            [
                self.exchange,
                self.symbol,
                self.timeframe,
                self.start,
                str(self.open),
                list(self.open_key),
                str(self.high),
                str(self.low),
                str(self.close),
                list(self.close_key),
                str(self.volume),
                str(self.quote_volume),
                self.count,
                str(self.buy),
                str(self.sell),
                self.first_ts,
                self.last_ts,
                self.last_offset,
                self.revision,
                self.closed,
                self.pending,
            ]
        )

    @classmethod
    def decode(cls, payload: bytes) -> CandleState:
        (
            exchange,
            symbol,
            timeframe,
            start,
            open_,
            open_key,
            high,
            low,
            close,
            close_key,
            volume,
            quote_volume,
            count,
            buy,
            sell,
            first_ts,
            last_ts,
            last_offset,
            revision,
            closed,
            pending,
        ) = orjson.loads(payload)
        state = cls(exchange, symbol, timeframe, start)
        state.open, state.open_key = Decimal(open_), tuple(open_key)  # type: ignore[assignment]
        state.high, state.low = Decimal(high), Decimal(low)
        state.close, state.close_key = Decimal(close), tuple(close_key)  # type: ignore[assignment]
        state.volume, state.quote_volume = Decimal(volume), Decimal(quote_volume)
        state.count, state.buy, state.sell = count, Decimal(buy), Decimal(sell)
        state.first_ts, state.last_ts, state.last_offset = first_ts, last_ts, last_offset
        state.revision, state.closed, state.pending = revision, closed, pending
        return state


def order_of(trade: Trade) -> OrderKey:
    return trade_order_key(trade.exchange_ts, trade.trade_id)
