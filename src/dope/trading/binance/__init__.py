"""Real orders on Binance spot (testnet or live), one module each:

* :mod:`~dope.trading.binance.rest` - the signed REST client and its error rules (spec §3.5);
* :mod:`~dope.trading.binance.filters` - the symbol's exchange filters (lot step, notional);
* :mod:`~dope.trading.binance.broker` - :class:`BinanceBroker`, the trader core's orders sent and booked;
* :mod:`~dope.trading.binance.reconcile` - after a restart, the journal settled against the exchange.
"""

from dope.trading.binance.broker import OUTCOME_UNKNOWN, BinanceBroker, JournalHook, client_order_id
from dope.trading.binance.filters import SymbolFilters
from dope.trading.binance.reconcile import reconcile
from dope.trading.binance.rest import (
    BinanceOrderClient,
    BinanceOrderError,
    Credentials,
    IpBanned,
    OrderDropped,
    OrderRejected,
    OrderReport,
    OrderUnknown,
    check_signed_url,
    sign,
)

__all__ = ["OUTCOME_UNKNOWN", "BinanceBroker", "BinanceOrderClient", "BinanceOrderError", "Credentials",
           "IpBanned", "JournalHook", "OrderDropped", "OrderRejected", "OrderReport", "OrderUnknown",
           "SymbolFilters", "check_signed_url", "client_order_id", "reconcile", "sign"]
