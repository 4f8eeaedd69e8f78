"""The Spark part: read trades over JDBC and reduce them to OHLCV candles.

Open and close are the first and last trade in (trade time, trade id) order: the minimum and
maximum of a struct that starts with those two fields, so ties in time are broken by id and
the result does not depend on how Spark happened to order the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from aggregator.windows import Span, from_ms
from candlestack.settings import INTERVALS_MS, PostgresSettings

# Trades as Spark sees them. PostgreSQL's inner query lets partition pruning and the
# (symbol, trade_time) index do the filtering that the predicates ask for.
SOURCE = """(SELECT symbol, trade_id, price, qty, trade_time,
        (extract(epoch FROM trade_time) * 1000)::bigint AS trade_ms,
        coalesce(last_trade_id - first_trade_id + 1, 1) AS raw_trades
    FROM trades) AS src"""

# Unconstrained numeric would arrive as decimal(38,18), leaving too few digits for the
# products in quote volume; numeric(22,10) is what the wire contract admits.
CUSTOM_SCHEMA = "price DECIMAL(22,10), qty DECIMAL(22,10)"


def span_predicate(span: Span, conn: psycopg2.extensions.connection) -> str:
    """A WHERE fragment for one span, rendered with psycopg2's own literal quoting."""
    return sql.SQL("(symbol = {} AND trade_time >= {} AND trade_time < {})").format(
        sql.Literal(span.symbol), sql.Literal(from_ms(span.start_ms)), sql.Literal(from_ms(span.end_ms)),
    ).as_string(conn)


def predicates(spans: Sequence[Span], parts: int, conn: psycopg2.extensions.connection) -> list[str]:
    """Group span predicates into at most ``parts`` OR-ed fragments: one JDBC query each."""
    parts = max(1, min(parts, len(spans)))
    groups: list[list[str]] = [[] for _ in range(parts)]
    for index, span in enumerate(sorted(spans)):
        groups[index * parts // len(spans)].append(span_predicate(span, conn))
    return [" OR ".join(group) for group in groups if group]


def read_trades(spark: SparkSession, postgres: PostgresSettings, where: list[str]) -> DataFrame:
    properties: dict[str, Any] = {
        "user": postgres.user,
        "password": postgres.password or "",
        "driver": "org.postgresql.Driver",
        "fetchsize": "20000",
        "customSchema": CUSTOM_SCHEMA,
        "ApplicationName": "candlestack-aggregator-spark",
    }
    return spark.read.jdbc(postgres.jdbc_url(), SOURCE, predicates=where, properties=properties)


def candles(trades: DataFrame, intervals: Sequence[str]) -> DataFrame:
    """One row per (symbol, timeframe, window) that has trades."""
    frames = []
    for name in intervals:
        step = INTERVALS_MS[name]
        order_key = F.struct("trade_ms", "trade_id", "price")
        windowed = trades.withColumn("open_ms", F.col("trade_ms") - F.pmod(F.col("trade_ms"), F.lit(step)))
        frames.append(
            windowed.groupBy("symbol", "open_ms")
            .agg(
                F.min(order_key).alias("first"),
                F.max(order_key).alias("last"),
                F.max("price").alias("high"),
                F.min("price").alias("low"),
                F.sum("qty").alias("volume"),
                F.sum(F.col("price") * F.col("qty")).alias("quote_volume"),
                F.sum("raw_trades").alias("trade_count"),
            )
            .select(
                "symbol",
                F.lit(name).alias("timeframe"),
                "open_ms",
                F.lit(step).cast("bigint").alias("interval_ms"),
                F.col("first.price").alias("open"),
                "high",
                "low",
                F.col("last.price").alias("close"),
                "volume",
                "quote_volume",
                "trade_count",
                F.col("first.trade_id").alias("first_trade_id"),
                F.col("last.trade_id").alias("last_trade_id"),
            )
        )
    return reduce(DataFrame.unionByName, frames)


CandleRow = tuple[Any, ...]


def compute(spark: SparkSession, postgres: PostgresSettings, where: list[str],
            intervals: Sequence[str]) -> tuple[int, list[CandleRow]]:
    """Read the trades matching ``where`` and return (trade rows read, candle rows)."""
    trades = read_trades(spark, postgres, where).cache()
    try:
        count = trades.count()
        if count == 0:
            return 0, []
        rows = [tuple(row) for row in candles(trades, intervals).collect()]
        return count, rows
    finally:
        trades.unpersist()
