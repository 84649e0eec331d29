"""Settings validation, the instrument list, the wire codec, exact decimals and key partitioning."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from services.common.decimals import DecimalRangeError, divide, multiply, parse_decimal, to_text
from services.common.instruments import InstrumentError, InstrumentList, default_instruments
from services.common.kafka import KeyHashCache
from services.common.schemas import Candle, DeadLetter, Gap, SchemaError, Trade, _Record, trade_order_key
from services.common.settings import K2Settings, render_settings_doc

REQUIRED = {
    "binance": "BTCUSDT ETHUSDT BNBUSDT SOLUSDT XRPUSDT ADAUSDT DOTUSDT LINKUSDT DOGEUSDT LTCUSDT AVAXUSDT "
    "ATOMUSDT",
    "kraken": "BTC/USD ETH/USD SOL/USD XRP/USD ADA/USD DOT/USD LINK/USD DOGE/USD LTC/USD AVAX/USD ATOM/USD",
    "coinbase": "BTC-USD ETH-USD SOL-USD XRP-USD ADA-USD DOT-USD LINK-USD DOGE-USD LTC-USD AVAX-USD ATOM-USD",
}


@pytest.mark.parametrize(
    "var,value,message",
    [
        ("K2_KAFKA_PORT", "70000", "port must be between"),
        ("K2_KAFKA_PORT", "abc", "valid integer"),
        ("K2_KAFKA_BOOTSTRAP", "localhost", "is not host:port"),
        ("K2_FEED_SOURCE", "bogus", "live"),
        ("K2_LOG_LEVEL", "LOUD", "unknown log level"),
        ("K2_INSTRUMENTS_FILE", "/nonexistent.json", "does not exist"),
    ],
)
def test_bad_settings_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=message):
        K2Settings()


def test_settings_defaults_put_all_state_under_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("K2_DATA_DIR", str(tmp_path))
    settings = K2Settings()
    assert settings.resolved_catalog_uri == f"sqlite:///{tmp_path}/catalog.db"
    assert settings.resolved_warehouse == f"file://{tmp_path}/warehouse"


def test_settings_doc_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
    assert doc.read_text() == render_settings_doc(), "run `task docs:settings`"


def test_bundled_instrument_list_has_every_required_symbol() -> None:
    instruments = default_instruments()
    for exchange, natives in REQUIRED.items():
        for native in natives.split():
            inst = instruments.require(exchange, native)
            assert inst.symbol.count("/") == 1
    assert instruments.require("binance", "BTCUSDT").symbol == "BTC/USDT"
    assert instruments.require("coinbase", "BTC-USD").symbol == "BTC/USD"
    assert instruments.by_native("kraken", "NOPE/USD") is None


@pytest.mark.parametrize(
    "data,message",
    [
        ({"bitstamp": {}}, "unknown exchange 'bitstamp'"),
        (
            {
                "binance": {
                    "BTCUSDT": {"symbol": "BTCUSDT", "price_tick": "1", "qty_step": "1", "ref_price": "1"}
                }
            },
            "is not BASE/QUOTE",
        ),
        (
            {
                "binance": {
                    "BTCUSDT": {"symbol": "BTC/USDT", "price_tick": "x", "qty_step": "1", "ref_price": "1"}
                }
            },
            "not a decimal",
        ),
    ],
)
def test_bad_instrument_lists_fail_clearly(
    data: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InstrumentError, match=message):
        InstrumentList.from_mapping(data)
    path = tmp_path / "instruments.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InstrumentError, match=message):
        InstrumentList.load(path)


def test_unknown_exchange_or_symbol_lookup_fails_clearly() -> None:
    instruments = default_instruments()
    with pytest.raises(InstrumentError, match="unknown exchange 'ftx'"):
        instruments.for_exchange("ftx")
    with pytest.raises(InstrumentError, match="unknown binance symbol 'FOOBAR'"):
        instruments.select("binance", ["BTCUSDT", "FOOBAR"])


def test_decimals_are_exact() -> None:
    assert parse_decimal("0.00012345") == Decimal("0.00012345")
    assert parse_decimal("67000.1") == Decimal("67000.1")
    assert multiply(Decimal("0.1"), Decimal("0.2")) == Decimal("0.02")
    assert multiply(Decimal("0.000000001"), Decimal("0.0000000004")) == Decimal("0")  # half-even below 1e-18
    assert multiply(Decimal("0.000000001"), Decimal("0.000000001234")) == Decimal("1E-18")
    assert divide(Decimal("1"), Decimal("3")) == Decimal("0.333333333333333333")
    assert to_text(Decimal("1E+3")) == "1000"
    assert to_text(Decimal("67000.10")) == "67000.1"
    for bad in ("1e21", "0.0000000000000000001", "NaN", "Infinity", "", "1,5"):
        with pytest.raises(ValueError):
            parse_decimal(bad)
    with pytest.raises(DecimalRangeError):
        parse_decimal("123456789012345678901")


def test_trade_and_candle_round_trip_without_float() -> None:
    trade = Trade(
        "kraken",
        "BTC/USD",
        "BTC/USD",
        "42",
        1_700_000_000_000_000,
        1_700_000_000_100_000,
        Decimal("67000.1"),
        Decimal("0.00012345"),
        multiply(Decimal("67000.1"), Decimal("0.00012345")),
        "BUY",
        "market.crypto.trades.kraken.raw",
        0,
        7,
    )
    wire = trade.encode()
    assert b'"price":"67000.1"' in wire and b'"quantity":"0.00012345"' in wire
    assert Trade.decode(wire) == trade
    # Trade's own fast encode gives exactly the generic record encoding, whatever the decimals
    for price, quantity in [
        ("0", "0"),
        ("1E+3", "0.000000000000000001"),
        ("67000.10000", "12345678901234567890"),
    ]:
        other = dataclasses.replace(trade, price=Decimal(price), quantity=Decimal(quantity))
        assert other.encode() == _Record.encode(other)
    candle = Candle(
        "binance",
        "BTC/USDT",
        "1m",
        0,
        60_000_000,
        *(Decimal("1.5"),) * 6,
        3,
        Decimal("1.5"),
        Decimal("1"),
        Decimal("0.5"),
        1,
        2,
        0,
    )
    assert Candle.decode(candle.encode()) == candle
    dead = DeadLetter("t", 0, 1, "binance", 5, "bad_price", "price <= 0", "{}", 2)
    assert DeadLetter.decode(dead.encode()) == dead
    gap = Gap("binance", "symbol", "BTC/USDT", "sequence", 10, 13, 3, 5)
    assert Gap.decode(gap.encode()) == gap


def test_decoding_rejects_floats_and_garbage() -> None:
    good = json.loads(
        Trade(
            "binance", "BTC/USDT", "BTCUSDT", "1", 1, 1, Decimal(1), Decimal(1), Decimal(1), "SELL", "t", 0, 0
        ).encode()
    )
    with pytest.raises(SchemaError, match="decimal string"):
        Trade.from_dict({**good, "price": 1.5})
    with pytest.raises(SchemaError):
        Trade.decode(b"not json")
    with pytest.raises(SchemaError):
        Trade.decode(b"[1,2]")
    with pytest.raises(SchemaError):
        Trade.from_dict({k: v for k, v in good.items() if k != "side"})


def test_trade_order_compares_numeric_ids_as_numbers() -> None:
    assert trade_order_key(5, "9") < trade_order_key(5, "10")
    assert trade_order_key(4, "10") < trade_order_key(5, "9")


def test_the_cached_partitioner_places_keys_as_kafka_does() -> None:
    """Same partition as aiokafka's (= the Java client's) murmur2 partitioner, cached or not, and for a
    cache that had to be cleared; a partition count change is honoured."""
    cached = KeyHashCache(size=50)
    reference = DefaultPartitioner()
    keys = [f"binance:SYM{i}USDT".encode() for i in range(200)] + [b"", b"kraken:BTC/USD"]
    for partitions in ([0, 1, 2, 3, 4, 5], [0, 1, 2]):
        for key in keys * 2:
            assert cached(key, partitions, partitions) == reference(key, partitions, partitions)
    assert len(cached._hashes) <= 50
    assert cached(None, [0, 1, 2], [1]) == 1  # no key: any available partition, as aiokafka does
