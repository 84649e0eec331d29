"""The instrument list: exchange → native symbol → canonical BASE/QUOTE, with tick and lot sizes.

The bundled list is `instruments.json` beside this file; `K2_INSTRUMENTS_FILE` replaces it.
Every service that names a symbol goes through `InstrumentList`, so an unknown exchange or
symbol is one clear error in one place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

EXCHANGES: tuple[str, ...] = ("binance", "kraken", "coinbase")
BUNDLED_FILE = Path(__file__).with_name("instruments.json")
_CANONICAL = re.compile(r"^[A-Z0-9]{2,10}/[A-Z0-9]{2,10}$")


class InstrumentError(ValueError):
    """The instrument list, or a lookup in it, is wrong."""


@dataclass(frozen=True, slots=True)
class Instrument:
    exchange: str
    native: str  # as the exchange spells it: BTCUSDT, BTC/USD, BTC-USD
    symbol: str  # canonical BASE/QUOTE
    price_tick: Decimal
    qty_step: Decimal
    ref_price: Decimal

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


class InstrumentList:
    def __init__(self, instruments: list[Instrument]) -> None:
        self._by_native: dict[tuple[str, str], Instrument] = {}
        self._by_symbol: dict[tuple[str, str], Instrument] = {}
        for inst in instruments:
            self._by_native[(inst.exchange, inst.native)] = inst
            self._by_symbol[(inst.exchange, inst.symbol)] = inst

    @classmethod
    def from_mapping(cls, data: object) -> InstrumentList:
        if not isinstance(data, dict):
            raise InstrumentError("the instrument list must be a JSON object of exchanges")
        instruments = []
        for exchange, symbols in data.items():
            if exchange not in EXCHANGES:
                raise InstrumentError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")
            if not isinstance(symbols, dict):
                raise InstrumentError(f"{exchange}: expected an object of native symbols")
            for native, spec in symbols.items():
                instruments.append(_parse_instrument(exchange, native, spec))
        return cls(instruments)

    @classmethod
    def load(cls, path: Path | None = None) -> InstrumentList:
        path = path or BUNDLED_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InstrumentError(f"cannot read instrument list {path}: {exc}") from exc
        return cls.from_mapping(data)

    def __iter__(self):
        return iter(self._by_native.values())

    def __len__(self) -> int:
        return len(self._by_native)

    def exchanges(self) -> list[str]:
        return sorted({inst.exchange for inst in self})

    def for_exchange(self, exchange: str) -> list[Instrument]:
        self._check_exchange(exchange)
        return [inst for inst in self if inst.exchange == exchange]

    def by_native(self, exchange: str, native: str) -> Instrument | None:
        """The instrument an exchange's own symbol names, or None when it is not listed."""
        return self._by_native.get((exchange, native))

    def by_symbol(self, exchange: str, symbol: str) -> Instrument | None:
        return self._by_symbol.get((exchange, symbol))

    def require(self, exchange: str, native: str) -> Instrument:
        self._check_exchange(exchange)
        inst = self.by_native(exchange, native)
        if inst is None:
            raise InstrumentError(f"unknown {exchange} symbol {native!r}")
        return inst

    def select(self, exchange: str, natives: list[str] | None) -> list[Instrument]:
        """The listed instruments of an exchange, or the named subset (each must be listed)."""
        if not natives:
            return self.for_exchange(exchange)
        return [self.require(exchange, native) for native in natives]

    @staticmethod
    def _check_exchange(exchange: str) -> None:
        if exchange not in EXCHANGES:
            raise InstrumentError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")


def _parse_instrument(exchange: str, native: str, spec: object) -> Instrument:
    if not isinstance(spec, dict):
        raise InstrumentError(f"{exchange} {native}: expected an object")
    symbol = spec.get("symbol")
    if not isinstance(symbol, str) or not _CANONICAL.match(symbol):
        raise InstrumentError(f"{exchange} {native}: canonical symbol {symbol!r} is not BASE/QUOTE")
    values = {}
    for key in ("price_tick", "qty_step", "ref_price"):
        try:
            value = Decimal(str(spec.get(key)))
        except InvalidOperation as exc:
            raise InstrumentError(f"{exchange} {native}: {key} {spec.get(key)!r} is not a decimal") from exc
        if not value.is_finite() or value <= 0:
            raise InstrumentError(f"{exchange} {native}: {key} must be positive")
        values[key] = value
    return Instrument(exchange=exchange, native=native, symbol=symbol, **values)


@cache
def default_instruments(path: Path | None = None) -> InstrumentList:
    """The instrument list named by K2_INSTRUMENTS_FILE, else the bundled one (cached)."""
    return InstrumentList.load(path)
