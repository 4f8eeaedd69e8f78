"""Two symbols through the whole pipeline, with the feed disconnecting so that part of the trades
arrive over REST gap fills: every stored row equals its source row field for field, and the
candles equal Binance's klines (XRPETH) or the independent computation (the synthetic BTCUSDT
with fractional quantities); the kline fields Binance's CSV lacks (taker volumes, raw trade ids,
quote volume, trade count) equal the independent computation for both."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.jobs import Aggregator
from candlestack.core import db
from tests.harness.pipeline import candles, scalar, stored_kline_fields
from tests.harness.reference import AggTrade, agg_trades, binance_klines, candles_from_trades, kline_fields
from tests.harness.services import AGG_TRADES_CSV, SYNTHETIC_CSV, Postgres, start_component, start_replay, wait_for
from tests.harness.settings import aggregator_settings

pytestmark = pytest.mark.slow

SOURCES = {"XRPETH": AGG_TRADES_CSV, "BTCUSDT": SYNTHETIC_CSV}

Row = tuple[int, Decimal, Decimal, int, int, int, int, bool]


def source_rows(trades: list[AggTrade]) -> list[Row]:
    return [(t.agg_id, Decimal(t.price), Decimal(t.qty), t.first_id, t.last_id, t.time_ms, t.time_ms,
             t.buyer_is_maker) for t in trades]


def stored_rows(conn: psycopg2.extensions.connection, symbol: str) -> list[Row]:
    with conn.cursor() as cur:
        cur.execute("SELECT trade_id, price, qty, first_trade_id, last_trade_id, "
                    "(extract(epoch FROM trade_time) * 1000)::bigint, (extract(epoch FROM event_time) * 1000)::bigint, "
                    "buyer_is_maker FROM trades WHERE symbol = %s ORDER BY trade_id", (symbol,))
        return list(cur.fetchall())


def test_two_symbols_with_gap_fills_store_every_field_and_exact_candles(
    pg: Postgres, database: str, pipeline_env: dict[str, str], conn: psycopg2.extensions.connection,
    spark: SparkSession, logdir: Path,
) -> None:
    trades = {symbol: agg_trades(path) for symbol, path in SOURCES.items()}
    total = sum(map(len, trades.values()))
    assert any(Decimal(t.qty) % 1 for t in trades["BTCUSDT"]), "the synthetic data must have fractional quantities"

    replay = start_replay([arg for path in SOURCES.values() for arg in ("--csv", str(path))]
                          + ["--rate", "3000", "--disconnect-every", "1"], logdir)
    env = {**pipeline_env, "CANDLESTACK_SYMBOLS": "xrpeth,btcusdt", "CANDLESTACK_STREAM": "aggTrade",
           "CANDLESTACK_BINANCE_WS_URL": replay.ws_url, "CANDLESTACK_BINANCE_REST_URL": replay.rest_url}
    consumer = start_component("consumer", ["consumer"], env, logdir)
    producer = start_component("producer", ["producer"], env, logdir)
    try:
        wait_for(lambda: replay.status()["done"], timeout=120, what="replay to finish")
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == total, timeout=120,
                 what=f"all {total} trades stored")
    finally:
        assert producer.stop() == 0, producer.log()
        assert consumer.stop() == 0, consumer.log()
        replay.component.stop()
    log = producer.log()
    assert "filled gap" in log or "caught up after reconnect" in log, "no trade came over REST"

    for symbol, source in trades.items():
        assert stored_rows(conn, symbol) == source_rows(source), symbol

    settings = aggregator_settings(pg, database, spark.sparkContext.master)
    work = db.connect(settings.postgres)
    try:
        aggregator = Aggregator(settings, spark, work)
        everything = [t for source in trades.values() for t in source]
        aggregator.backfill(min(t.time_ms for t in everything), max(t.time_ms for t in everything) + 1)
    finally:
        work.close()
    assert candles(conn, "1m", "XRPETH") == binance_klines()
    for step, timeframe in ((60_000, "1m"), (300_000, "5m")):
        assert candles(conn, timeframe, "BTCUSDT") == candles_from_trades(trades["BTCUSDT"], step)
        # Every other kline field (taker volumes, raw trade ids, ...), fillers included.
        for symbol, source in trades.items():
            assert stored_kline_fields(conn, timeframe, symbol) == kline_fields(source, step), (symbol, timeframe)
