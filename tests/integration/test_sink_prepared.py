"""The candle write's per-region statements run as server-side prepared statements: same fillers
and completeness as before, on any connection, prepared again wherever they are missing."""

from __future__ import annotations

import psycopg2.extensions

from candlestack.aggregator import sink
from tests.harness.services import Postgres

BASE_MS = 1_700_000_000_000 // 60_000 * 60_000
INSERT = """
INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume,
                     trade_count, first_trade_id, last_trade_id, id_count, taker_buy_volume, taker_buy_quote_volume,
                     first_raw_trade_id, last_raw_trade_id, price_sum)
VALUES ('BTCUSDT', '1m', timestamptz 'epoch' + %(open)s * interval '1 millisecond',
        timestamptz 'epoch' + (%(open)s + 60000) * interval '1 millisecond', %(price)s, %(price)s, %(price)s,
        %(price)s, 1, %(price)s, 2, %(first)s, %(first)s + 1, 2, 0, 0, %(first)s, %(first)s + 1, 2 * %(price)s)
"""


def state(conn: psycopg2.extensions.connection) -> list[tuple[int, int, str, bool]]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM open_time) * 1000)::bigint - %s, trade_count, close::text, complete "
                    "FROM candles WHERE symbol = 'BTCUSDT' AND timeframe = '1m' ORDER BY open_time", (BASE_MS,))
        return [tuple(row) for row in cur.fetchall()]


def test_prepared_region_statements_write_fillers_and_completeness_on_every_connection(
    pg: Postgres, database: str,
) -> None:
    first = pg.connect(database)
    try:
        with first, first.cursor() as cur:
            # Traded minutes 0 and 3 with consecutive ids (1-2, 3-4): minutes 1 and 2 are quiet.
            cur.execute(INSERT, {"open": BASE_MS, "price": "10", "first": 1})
            cur.execute(INSERT, {"open": BASE_MS + 180_000, "price": "12", "first": 3})
        region = sink.Region("BTCUSDT", "1m", 60_000, BASE_MS, BASE_MS + 180_000)
        # 2 fillers written; the two traded candles were already stored as complete (the default).
        assert sink.write(first, [], [region]) == 2
        expected = [(0, 2, "10", True), (60_000, 0, "10", True), (120_000, 0, "10", True), (180_000, 2, "12", True)]
        assert state(first) == expected
        assert sink.write(first, [], [region]) == 0  # nothing changes: the same statements, prepared once
        with first, first.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = ANY (%s)", (list(sink.PREPARED),))
            assert cur.fetchone() == (2,)
            cur.execute("DEALLOCATE ALL")
            # An id missing between the traded minutes: the fillers can no longer be proven empty.
            cur.execute("UPDATE candles SET first_trade_id = 4, first_raw_trade_id = 4, last_trade_id = 5, "
                        "last_raw_trade_id = 5 WHERE open_time = timestamptz 'epoch' + %s * interval '1 millisecond'",
                        (BASE_MS + 180_000,))
        # Prepared again: both fillers and both traded candles (their edges no longer join) incomplete.
        assert sink.write(first, [], [region]) == 4
        assert [row[3] for row in state(first)] == [False, False, False, False]
    finally:
        first.close()
    second = pg.connect(database)  # a new session has none of them prepared
    try:
        assert sink.write(second, [], [region]) == 0
        assert sink.write(second, [], []) == 0
    finally:
        second.close()
