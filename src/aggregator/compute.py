"""The Spark part: read trades over JDBC and reduce them to OHLCV candles.

Open and close are the first and last trade in (trade time, trade id) order: the minimum and
maximum of a struct that starts with those two fields, so ties in time are broken by id and
the result does not depend on how Spark happened to order the rows.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from functools import reduce
from math import gcd
from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from pyspark import SparkContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from candlestack.aggregator.faults import JobTimeoutError
from candlestack.aggregator.windows import Span
from candlestack.core.epoch import from_ms
from candlestack.core.settings import INTERVALS_MS, PostgresSettings

# Trades as Spark sees them. PostgreSQL's inner query lets partition pruning and the
# (symbol, trade_time) index do the filtering that the predicates ask for.
# Taker volumes count the trades whose buyer took (buyer_is_maker = false), as Binance's kline
# fields "taker buy base/quote asset volume". Raw ids: a trade-stream row is one raw trade; an
# aggregate covers raw trades first_trade_id..last_trade_id, and raw ids grow with aggregate ids,
# so a window's smallest first and largest last raw id are its first and last aggregate's.
SOURCE = """(SELECT symbol, trade_id, price, qty, price * qty AS quote, trade_time,
        (extract(epoch FROM trade_time) * 1000)::bigint AS trade_ms,
        coalesce(last_trade_id - first_trade_id + 1, 1) AS raw_trades,
        CASE WHEN buyer_is_maker THEN 0 ELSE qty END AS taker_qty,
        CASE WHEN buyer_is_maker THEN 0 ELSE price * qty END AS taker_quote,
        coalesce(first_trade_id, trade_id) AS first_raw,
        coalesce(last_trade_id, trade_id) AS last_raw
    FROM trades) AS src"""

# Unconstrained numeric would arrive as decimal(38,18). Price and quantity fit numeric(22,10)
# (the wire contract's limit). Their product is taken in PostgreSQL, exactly: in Spark,
# decimal(22,10) * decimal(22,10) needs 45 digits and would be rounded to 13 decimals. A
# product has at most 16 decimals for Binance's 8-decimal values, so decimal(38,18) holds it.
CUSTOM_SCHEMA = ("price DECIMAL(22,10), qty DECIMAL(22,10), quote DECIMAL(38,18), "
                 "taker_qty DECIMAL(22,10), taker_quote DECIMAL(38,18)")


# Stored candles of the base interval as partial aggregates, for windows no new trade touched
# (see candles()). Within a window every trade is later than the window's start and earlier
# than the next window's, so (window start, first id, open) orders partials of different
# windows exactly as (trade time, trade id, price) orders their trades.
STORED_SOURCE = """(SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint AS open_ms,
        open, close, high, low, volume, quote_volume, trade_count, id_count,
        first_trade_id, last_trade_id, taker_buy_volume, taker_buy_quote_volume,
        first_raw_trade_id, last_raw_trade_id, price_sum, open_time AS trade_time
    FROM candles WHERE timeframe = '{timeframe}' AND trade_count > 0) AS stored"""
STORED_SCHEMA = ("open DECIMAL(22,10), close DECIMAL(22,10), high DECIMAL(22,10), low DECIMAL(22,10), "
                 "volume DECIMAL(38,18), quote_volume DECIMAL(38,18), taker_buy_volume DECIMAL(38,18), "
                 "taker_buy_quote_volume DECIMAL(38,18), price_sum DECIMAL(38,18)")


def span_predicate(span: Span, conn: psycopg2.extensions.connection) -> str:
    """A WHERE fragment for one span, rendered with psycopg2's own literal quoting."""
    fragment = sql.SQL("(symbol = {} AND trade_time >= {} AND trade_time < {})").format(
        sql.Literal(span.symbol), sql.Literal(from_ms(span.start_ms)), sql.Literal(from_ms(span.end_ms)),
    )
    return str(fragment.as_string(conn))


def predicates(spans: Sequence[Span], parts: int, conn: psycopg2.extensions.connection) -> list[str]:
    """Group span predicates into at most ``parts`` OR-ed fragments: one JDBC query each."""
    if not spans:
        return []
    parts = max(1, min(parts, len(spans)))
    groups: list[list[str]] = [[] for _ in range(parts)]
    for index, span in enumerate(sorted(spans)):
        groups[index * parts // len(spans)].append(span_predicate(span, conn))
    return [" OR ".join(group) for group in groups if group]


def _jdbc_properties(postgres: PostgresSettings, schema: str) -> dict[str, Any]:
    return {
        "user": postgres.user,
        "password": postgres.password or "",
        "driver": "org.postgresql.Driver",
        "fetchsize": "20000",
        "customSchema": schema,
        "ApplicationName": "candlestack-aggregator-spark",
        **postgres.jdbc_tls_properties(),
    }


def read_trades(spark: SparkSession, postgres: PostgresSettings, where: list[str]) -> DataFrame:
    return spark.read.jdbc(postgres.jdbc_url(), SOURCE, predicates=where,
                           properties=_jdbc_properties(postgres, CUSTOM_SCHEMA))


def read_stored(spark: SparkSession, postgres: PostgresSettings, timeframe: str, where: list[str]) -> DataFrame:
    """Stored candles of ``timeframe`` inside ``where`` (trade_time stands for open_time)."""
    return spark.read.jdbc(postgres.jdbc_url(), STORED_SOURCE.format(timeframe=timeframe), predicates=where,
                           properties=_jdbc_properties(postgres, STORED_SCHEMA))


def _partials(frame: DataFrame, step: int, *, first: Column, last: Column, high: str, low: str,
              volume: Column, quote_volume: Column, raw_trades: Column, trades: Column,
              taker_volume: Column, taker_quote_volume: Column, first_raw: Column, last_raw: Column,
              price_sum: Column) -> DataFrame:
    return (
        frame.withColumn("open_ms", F.col("open_ms") - F.pmod(F.col("open_ms"), F.lit(step)))
        .groupBy("symbol", "open_ms")
        .agg(
            F.min(first).alias("first"),
            F.max(last).alias("last"),
            F.max(high).alias("high"),
            F.min(low).alias("low"),
            F.sum(volume).alias("volume"),
            F.sum(quote_volume).alias("quote_volume"),
            F.sum(raw_trades).alias("trade_count"),
            F.sum(trades).alias("trades"),
            F.sum(taker_volume).alias("taker_volume"),
            F.sum(taker_quote_volume).alias("taker_quote_volume"),
            F.min(first_raw).alias("first_raw"),
            F.max(last_raw).alias("last_raw"),
            F.sum(price_sum).alias("price_sum"),
        )
    )


def base_step(intervals: Sequence[str]) -> int:
    """The greatest common divisor of the intervals: the windows trades are reduced to first."""
    return reduce(gcd, (INTERVALS_MS[name] for name in intervals))


def base_interval(intervals: Sequence[str]) -> str | None:
    """The configured interval whose windows are the base windows, if there is one."""
    step = base_step(intervals)
    return next((name for name in intervals if INTERVALS_MS[name] == step), None)


def _stored_partials(stored: DataFrame, like: DataFrame) -> DataFrame:
    """Stored base candles in the shape (and types) of the partials built from trades."""
    types = {f.name: f.dataType for f in like.schema.fields}
    first = F.struct(F.col("open_ms").alias("trade_ms"), F.col("first_trade_id").alias("trade_id"),
                     F.col("open").alias("price"))
    last = F.struct(F.col("open_ms").alias("trade_ms"), F.col("last_trade_id").alias("trade_id"),
                    F.col("close").alias("price"))
    columns = {
        "symbol": F.col("symbol"), "open_ms": F.col("open_ms"), "first": first, "last": last,
        "high": F.col("high"), "low": F.col("low"), "volume": F.col("volume"),
        "quote_volume": F.col("quote_volume"), "trade_count": F.col("trade_count"), "trades": F.col("id_count"),
        "taker_volume": F.col("taker_buy_volume"), "taker_quote_volume": F.col("taker_buy_quote_volume"),
        "first_raw": F.col("first_raw_trade_id"), "last_raw": F.col("last_raw_trade_id"),
        "price_sum": F.col("price_sum"),
    }
    return stored.select(*(column.cast(types[name]).alias(name) for name, column in columns.items()))


def candles(trades: DataFrame, intervals: Sequence[str], stored: DataFrame | None = None) -> DataFrame:
    """One row per (symbol, timeframe, window) that has trades.

    Trades are reduced once, to windows of the greatest common divisor of the intervals (1m
    for the defaults); each interval is then the exact combination of those partial aggregates
    (min/max of (time, id, price) structs, sums of decimals). That is the same as building
    every interval from trades, in one read and one trade-level shuffle, and it is not the
    lossy roll-up of zero-volume-filled candles: fillers are added afterwards, per interval.

    ``stored``: candles of the base interval already built for other base windows of the same
    larger windows (read with :func:`read_stored`). They join the partials for the larger
    intervals only, so a tick reads the trades of the base windows it touched, not of every
    larger window around them; the base candles it returns are those of the trades alone.
    """
    steps = {name: INTERVALS_MS[name] for name in intervals}
    base = base_step(intervals)
    order_key = F.struct("trade_ms", "trade_id", "price")
    fine = _partials(
        trades.withColumn("open_ms", F.col("trade_ms")), base,
        first=order_key, last=order_key, high="price", low="price", volume=F.col("qty"),
        quote_volume=F.col("quote"), raw_trades=F.col("raw_trades"), trades=F.lit(1),
        taker_volume=F.col("taker_qty"), taker_quote_volume=F.col("taker_quote"), first_raw=F.col("first_raw"),
        last_raw=F.col("last_raw"), price_sum=F.col("price"),
    )
    wider = fine if stored is None else fine.unionByName(_stored_partials(stored, fine))
    frames = []
    for name, step in steps.items():
        rolled = fine if step == base else _partials(
            wider, step, first=F.col("first"), last=F.col("last"), high="high", low="low",
            volume=F.col("volume"), quote_volume=F.col("quote_volume"), raw_trades=F.col("trade_count"),
            trades=F.col("trades"), taker_volume=F.col("taker_volume"),
            taker_quote_volume=F.col("taker_quote_volume"), first_raw=F.col("first_raw"),
            last_raw=F.col("last_raw"), price_sum=F.col("price_sum"),
        )
        frames.append(rolled.select(
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
            # Distinct trades (one row per trade id): the measure of how fresh a candle is.
            F.col("trades").alias("id_count"),
            "taker_volume",
            "taker_quote_volume",
            F.col("first_raw").alias("first_raw_trade_id"),
            F.col("last_raw").alias("last_raw_trade_id"),
            # The sum of the rows' prices: stock.aggregated_prices_*.avg_price = price_sum / id_count.
            "price_sum",
        ))
    return reduce(DataFrame.unionByName, frames)


CandleRow = tuple[Any, ...]


def collect_within(spark: SparkSession, frame: DataFrame, timeout_s: float | None,
                   *, stop: threading.Event | None = None) -> list[Any]:
    """``frame.collect()``, with its jobs cancelled after ``timeout_s`` (None: never) or on ``stop``.

    A job can wait forever for executors that never come (a restarted standalone master no
    longer knows this application); a cancelled job raises instead, and the caller retries.

    Raises:
        JobTimeoutError: the jobs ran past ``timeout_s`` and were cancelled.
    """
    if timeout_s is None and stop is None:
        return frame.collect()
    context = spark.sparkContext
    tag = f"candlestack-{uuid.uuid4().hex}"
    context.addJobTag(tag)  # tags are per thread: only this thread's jobs get it
    # Interrupt the tasks too, so that a read blocked on its socket stops holding executor cores.
    context.setInterruptOnCancel(True)
    done = threading.Event()
    timed_out = threading.Event()
    watcher = threading.Thread(target=_cancel_when_due, args=(context, tag), daemon=True, kwargs={
        "done": done, "timed_out": timed_out, "timeout_s": timeout_s, "stop": stop})
    watcher.start()
    try:
        return frame.collect()
    except Exception as exc:
        if timed_out.is_set():
            raise JobTimeoutError(timeout_s or 0.0) from exc
        raise
    finally:
        done.set()
        watcher.join()
        context.removeJobTag(tag)


def _cancel_when_due(context: SparkContext, tag: str, *, done: threading.Event, timed_out: threading.Event,
                     timeout_s: float | None, stop: threading.Event | None) -> None:
    """Cancel the jobs tagged ``tag`` once ``timeout_s`` has passed or ``stop`` is set, until ``done``.

    Cancelling again until the collect returns: a cancel reaches only jobs already submitted,
    and a query may submit its jobs late (a busy driver) or one after another (adaptive stages).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    due = False
    while not done.wait(0.2):
        if not due:
            late = deadline is not None and time.monotonic() >= deadline
            due = late or (stop is not None and stop.is_set())
            if late:
                timed_out.set()
        if due:
            context.cancelJobsWithTag(tag)


def compute(spark: SparkSession, postgres: PostgresSettings, where: list[str], intervals: Sequence[str],
            *, stored_where: list[str] | None = None, timeout_s: float | None = None,
            stop: threading.Event | None = None) -> tuple[int, list[CandleRow]]:
    """Read the trades matching ``where`` and return (trades read, candle rows), in one Spark job.

    ``stored_where``: base-interval candles to read as partials for the larger intervals (see
    :func:`candles`); the base interval must be one of ``intervals``.
    """
    stored = None
    if stored_where:
        base = base_interval(intervals)
        if base is None:
            raise ValueError(f"no stored candles to roll up: the intervals {intervals} lack their base interval")
        stored = read_stored(spark, postgres, base, stored_where)
    frame = candles(read_trades(spark, postgres, where), intervals, stored)
    rows = collect_within(spark, frame, timeout_s, stop=stop)
    # Every interval partitions the same trades: count them on one.
    count = sum(int(row["id_count"]) for row in rows if row["timeframe"] == intervals[0])
    return count, [tuple(row) for row in rows]
