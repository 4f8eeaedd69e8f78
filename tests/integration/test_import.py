"""``candlestack import`` against a fake archive server with the data.binance.vision layout,
serving archives built at test time from the real XRPETH trades in tests/data."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import subprocess
import threading
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.jobs import Aggregator
from candlestack.core import db
from candlestack.importer.main import Importer, Options, backfill_ranges
from tests.harness.pipeline import candles, scalar, stored_quote_volumes
from tests.harness.reference import AggTrade, agg_trades, binance_klines, candles_from_trades, quote_volumes
from tests.harness.services import Postgres, candlestack_command, wait_for
from tests.harness.settings import aggregator_settings, postgres_settings
from tests.integration.test_cli import env_of

TRADE_COLUMNS = ("symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id, trade_time, event_time, "
                 "buyer_is_maker")
DAYS = (date(2019, 10, 11), date(2019, 10, 12), date(2019, 10, 13))


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def agg_line(t: AggTrade) -> str:
    return f"{t.agg_id},{t.price},{t.qty},{t.first_id},{t.last_id},{t.time_ms},{t.buyer_is_maker},True\n"


def write_archive(root: Path, symbol: str, kind: str, stamp: str, body: str, *, monthly: bool = False,
                  checksum: str | None = None) -> Path:
    """One zip (holding one csv) and its .CHECKSUM, where data.binance.vision keeps them."""
    name = f"{symbol}-{kind}-{stamp}"
    folder = root / "data" / "spot" / ("monthly" if monthly else "daily") / kind / symbol
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", body)
    path = folder / f"{name}.zip"
    path.write_bytes(buffer.getvalue())
    sha = checksum or hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / f"{name}.zip.CHECKSUM").write_text(f"{sha}  {name}.zip\n")
    return path


def build_xrpeth_archive(root: Path) -> dict[date, list[AggTrade]]:
    """The XRPETH aggTrades as the archive's daily files (no header, millisecond times)."""
    by_day: dict[date, list[AggTrade]] = defaultdict(list)
    for trade in agg_trades():
        by_day[_day(trade.time_ms)].append(trade)
    assert sorted(by_day) == list(DAYS)
    for day, trades in by_day.items():
        write_archive(root, "XRPETH", "aggTrades", day.isoformat(), "".join(map(agg_line, trades)))
    return by_day


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    return root


@pytest.fixture
def archive_url(archive_root: Path) -> Iterator[str]:
    """A fake data.binance.vision serving ``archive_root`` over HTTP (a 404 for what is absent)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(archive_root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def trade_rows(conn: psycopg2.extensions.connection) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {TRADE_COLUMNS} FROM trades ORDER BY symbol, trade_time, trade_id")
        return list(cur.fetchall())


def expected_rows(trades: list[AggTrade]) -> list[tuple[object, ...]]:
    """The rows the consumer stores for the live replay of these trades (event time = trade time)."""
    rows = []
    for t in sorted(trades, key=lambda t: (t.time_ms, t.agg_id)):
        when = datetime.fromtimestamp(t.time_ms / 1000, UTC)
        rows.append(("XRPETH", t.agg_id, "aggTrade", Decimal(t.price), Decimal(t.qty), t.first_id, t.last_id,
                     when, when, t.buyer_is_maker))
    return rows


def run_import(pg: Postgres, database: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(candlestack_command("import", *args), env=env_of(pg, database), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.spark
@pytest.mark.slow
def test_import_of_the_archive_gives_the_replays_trades_and_binances_candles(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, spark: SparkSession,
    archive_root: Path, archive_url: str,
) -> None:
    build_xrpeth_archive(archive_root)
    options = Options(kind="aggTrades", symbols=("XRPETH",), first=DAYS[0], last=DAYS[-1], base_url=archive_url,
                      download_dir=archive_root.parent / "downloads")
    settings = aggregator_settings(pg, database, spark.sparkContext.master)
    connect = partial(db.connect, settings.postgres)
    work = connect()
    try:
        summary = Importer(connect, options).run()
        assert (summary.imported, summary.rows, summary.inserted) == (3, 12_477, 12_477)
        trades = agg_trades()
        # Row for row what the consumer stores from the live replay of the same file (the
        # end-to-end test's pipeline; event time is the trade time there too).
        assert trade_rows(conn) == expected_rows(trades)
        assert summary.ranges == {"XRPETH": (trades[0].time_ms, trades[-1].time_ms)}

        aggregator = Aggregator(settings, spark, work)
        backfill_ranges(summary, lambda symbol, lo, hi: aggregator.backfill(lo, hi, [symbol]))
        assert candles(conn, "1m") == binance_klines()
        assert scalar(conn, "SELECT count(*) FROM candles WHERE NOT complete") == 0
        assert candles(conn, "5m") == candles_from_trades(trades, 300_000)
        for timeframe, step in (("1m", 60_000), ("5m", 300_000)):
            assert stored_quote_volumes(conn, timeframe) == quote_volumes(trades, step)

        # Again: every file is known by name and checksum, nothing is downloaded or written.
        again = Importer(connect, options).run()
        assert (again.skipped, again.imported, again.inserted) == (3, 0, 0)
        assert again.ranges == summary.ranges
        # Forced: loaded again, and the primary key keeps every row single.
        forced = Importer(connect, replace(options, force=True)).run()
        assert (forced.imported, forced.rows, forced.inserted) == (3, 12_477, 0)
        assert trade_rows(conn) == expected_rows(trades)
    finally:
        work.close()


def test_cli_refuses_a_bad_checksum_reports_a_missing_day_and_reimports_nothing(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, archive_root: Path, archive_url: str,
) -> None:
    by_day = build_xrpeth_archive(archive_root)
    # The 12th's file is damaged after its checksum was taken; the 14th has no file (404).
    bad = write_archive(archive_root, "XRPETH", "aggTrades", "2019-10-12",
                        "".join(map(agg_line, by_day[DAYS[1]])), checksum="0" * 64)
    args = ("--base-url", archive_url, "--symbols", "xrpeth", "--kind", "aggTrades", "--from", "2019-10-11",
            "--to", "2019-10-14", "--no-backfill")
    first = run_import(pg, database, *args)
    assert first.returncode == 65, first.stderr
    assert "refused: XRPETH-aggTrades-2019-10-12.zip" in first.stdout
    assert "missing: XRPETH-aggTrades-2019-10-14.zip" in first.stdout
    assert "does not match its .CHECKSUM" in first.stderr
    kept = by_day[DAYS[0]] + by_day[DAYS[2]]
    assert trade_rows(conn) == expected_rows(kept)
    assert "candlestack aggregator backfill --symbols XRPETH" in first.stdout

    # Repaired: only the refused file loads; the others are skipped by name and checksum.
    (bad.parent / (bad.name + ".CHECKSUM")).write_text(f"{hashlib.sha256(bad.read_bytes()).hexdigest()}  {bad.name}\n")
    second = run_import(pg, database, *args)
    assert second.returncode == 0, second.stderr
    assert "1 imported, 2 already imported, 1 missing" in second.stdout
    assert trade_rows(conn) == expected_rows(agg_trades())
    third = run_import(pg, database, *args)
    assert third.returncode == 0, third.stderr
    assert "0 new rows" in third.stdout
    assert scalar(conn, "SELECT sum(rows_read) FROM imported_files") == 12_477


def trades_layout_file(path: Path) -> list[AggTrade]:
    """A trades-layout csv with a header and microsecond times: the aggregates of one raw trade
    each (first id = last id), ids and prices as they were."""
    singles = [t for t in agg_trades() if t.first_id == t.last_id and _day(t.time_ms) == DAYS[0]]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"])
        for t in singles:
            writer.writerow([t.first_id, t.price, t.qty, str(Decimal(t.price) * Decimal(t.qty)), t.time_ms * 1000,
                             "true" if t.buyer_is_maker else "false", "true"])
    return singles


def test_trades_layout_with_header_and_microseconds_from_a_local_csv_and_the_kind_guard(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, tmp_path: Path,
) -> None:
    path = tmp_path / "XRPETH-trades-2019-10-11.csv"
    singles = trades_layout_file(path)
    result = run_import(pg, database, str(path), "--no-backfill")
    assert result.returncode == 0, result.stderr
    assert "no .CHECKSUM" in result.stderr
    with conn.cursor() as cur:
        cur.execute("SELECT trade_id, stream, price, qty, first_trade_id, (extract(epoch FROM trade_time) * 1000)"
                    "::bigint, buyer_is_maker FROM trades ORDER BY trade_time, trade_id")
        stored = cur.fetchall()
    assert stored == [(t.first_id, "trade", Decimal(t.price), Decimal(t.qty), None, t.time_ms, t.buyer_is_maker)
                      for t in sorted(singles, key=lambda t: (t.time_ms, t.first_id))]

    # A line PostgreSQL cannot take: the file is refused and not recorded, the others stay.
    broken = tmp_path / "XRPETH-trades-2019-10-12.csv"
    broken.write_text("1,0.00141342,23,0.03,1570838400000,true,true\n2,not-a-price,1,1,1570838400001,true,true\n")
    refused_line = run_import(pg, database, str(broken), "--no-backfill")
    assert refused_line.returncode == 65, refused_line.stderr
    assert "refused: XRPETH-trades-2019-10-12.csv" in refused_line.stdout
    assert "not-a-price" in refused_line.stderr
    assert scalar(conn, "SELECT count(*) FROM trades") == len(singles)
    assert scalar(conn, "SELECT count(*) FROM imported_files") == 1

    # aggTrades into a database of raw trades: refused before anything is written.
    agg = tmp_path / "XRPETH-aggTrades-2019-10-12.csv"
    agg.write_text("".join(agg_line(t) for t in agg_trades() if _day(t.time_ms) == DAYS[1]))
    refused = run_import(pg, database, str(agg), "--no-backfill")
    assert refused.returncode == 65
    assert "holds 'trade' trades" in refused.stderr
    assert scalar(conn, "SELECT count(*) FROM trades") == len(singles)


def test_an_import_killed_mid_file_resumes_and_ends_with_the_same_trades(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, archive_root: Path, archive_url: str,
) -> None:
    build_xrpeth_archive(archive_root)
    args = ("--base-url", archive_url, "--symbols", "XRPETH", "--kind", "aggTrades", "--from", "2019-10-11",
            "--to", "2019-10-13", "--no-backfill", "--block-bytes", "40000")
    # About 530 lines a block: the 11th's file is 12 blocks (5,929 lines), the 12th's 8, and the
    # process dies after 14 committed blocks, inside the 12th's file.
    killed = run_import(pg, database, *args, "--die-after-blocks", "14")
    assert killed.returncode == 137, killed.stderr
    # The other worker's block may still be committing on the server: wait for its backend to end.
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name = 'candlestack-import'") == 0,
             timeout=30, what="the killed import's connections to end")
    partial = scalar(conn, "SELECT count(*) FROM trades")
    assert isinstance(partial, int) and 0 < partial < 12_477
    finished = scalar(conn, "SELECT array_agg(file_name ORDER BY file_name) FROM imported_files")
    assert finished == ["XRPETH-aggTrades-2019-10-11.zip"]

    resumed = run_import(pg, database, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 imported, 1 already imported" in resumed.stdout
    assert trade_rows(conn) == expected_rows(agg_trades())
    new_rows = scalar(conn, "SELECT sum(rows_inserted) FROM imported_files WHERE file_name > %s",
                      ("XRPETH-aggTrades-2019-10-11.zip",))
    assert new_rows == 12_477 - partial


def test_a_month_without_its_monthly_file_is_taken_day_by_day_and_a_monthly_file_loads_whole(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, archive_root: Path, archive_url: str,
) -> None:
    build_xrpeth_archive(archive_root)
    connect = partial(db.connect, postgres_settings(pg, database))
    october = Options(kind="aggTrades", symbols=("XRPETH",), first=date(2019, 10, 1), last=date(2019, 10, 31),
                      base_url=archive_url, download_dir=archive_root.parent / "downloads")
    summary = Importer(connect, october).run()
    assert (summary.files, summary.imported, len(summary.missing)) == (31, 3, 28)
    assert "XRPETH-aggTrades-2019-10-01.zip" in summary.missing
    assert trade_rows(conn) == expected_rows(agg_trades())

    # The month as one file with a header line and microsecond times, into a second database.
    body = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n"
    body += "".join(agg_line(replace(t, time_ms=t.time_ms * 1000)) for t in agg_trades())
    write_archive(archive_root, "XRPETH", "aggTrades", "2019-10", body, monthly=True)
    pg.create_database(database + "_m")
    other = pg.connect(database + "_m")
    try:
        db.migrate(other)
        monthly = Importer(partial(db.connect, postgres_settings(pg, database + "_m")), october).run()
        assert (monthly.files, monthly.imported, monthly.rows) == (1, 1, 12_477)
        assert trade_rows(other) == expected_rows(agg_trades())
    finally:
        other.close()


def test_the_consumers_login_may_import_and_the_read_only_one_may_not(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, archive_root: Path, archive_url: str,
) -> None:
    """The deployment runs the load as the consumer's login (group candlestack_ingest only)."""
    from tests.integration.test_retention_role import login, run_as  # noqa: PLC0415

    build_xrpeth_archive(archive_root)
    login(conn, "import_test_ingest", "candlestack_ingest")
    login(conn, "import_test_read", "candlestack_read")
    args = ("import", "--base-url", archive_url, "--symbols", "XRPETH", "--kind", "aggTrades", "--from", "2019-10-11",
            "--to", "2019-10-13", "--no-backfill")
    denied = run_as(pg, database, "import_test_read", *args)
    assert denied.returncode == 77, denied.stderr
    assert "needs a member of candlestack_ingest" in denied.stderr
    done = run_as(pg, database, "import_test_ingest", *args)
    assert done.returncode == 0, done.stderr
    assert trade_rows(conn) == expected_rows(agg_trades())


@pytest.mark.slow
def test_imported_trades_equal_the_live_replays_row_for_row(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, pipeline_env: dict[str, str], logdir: Path,
    archive_root: Path, archive_url: str,
) -> None:
    """The live path (replay feed -> producer -> broker -> consumer) into this test's database,
    the import of the same trades as an archive into another: the same rows."""
    from tests.integration.test_end_to_end import run_feed  # noqa: PLC0415

    _producer, consumer = run_feed(["--rate", "4000"], pipeline_env, conn, logdir)
    assert consumer.stop() == 0, consumer.log()
    build_xrpeth_archive(archive_root)
    imported = database + "_i"
    pg.create_database(imported)
    other = pg.connect(imported)
    try:
        db.migrate(other)
        options = Options(kind="aggTrades", symbols=("XRPETH",), first=DAYS[0], last=DAYS[-1], base_url=archive_url)
        summary = Importer(partial(db.connect, postgres_settings(pg, imported)), options).run()
        assert summary.inserted == 12_477
        assert trade_rows(other) == trade_rows(conn)
    finally:
        other.close()
