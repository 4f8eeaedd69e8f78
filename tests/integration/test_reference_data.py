"""The independent checker agrees with Binance before it is used to judge the pipeline."""

from __future__ import annotations

from tests.harness.reference import agg_trades, binance_klines, candles_from_trades


def test_python_recomputation_reproduces_binance_klines() -> None:
    trades = agg_trades()
    assert len(trades) == 12_477
    assert candles_from_trades(trades, 60_000) == binance_klines()
