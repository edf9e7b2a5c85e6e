"""Sources of trades: Binance (websocket + REST backfill), replay of files or the store, a synthetic market."""
