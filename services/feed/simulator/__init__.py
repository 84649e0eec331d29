"""A local exchange simulator: Binance, Kraken and Coinbase WebSocket protocols on one port."""
