"""OHLCV service: event-time candles (1m–1d) from market.crypto.trades, live updates and final candles."""
