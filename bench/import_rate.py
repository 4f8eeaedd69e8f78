"""Import: ``candlestack import`` of archive files into PostgreSQL, against a plain COPY of the
same CSV into a table without keys, in the same run.

The archive is synthetic: daily aggTrades zips of one symbol (1M lines each; ``--quick`` one of
500k), written in the data.binance.vision layout with their .CHECKSUM files. Our import runs
in-process on local files (checksum, unzip, COPY into staging, INSERT ... ON CONFLICT into the
partitioned trades table, finished-file records), without the backfill. The baseline is
psycopg2's copy_expert of the uncompressed CSV into a fresh plain table with no index: what
PostgreSQL takes just to parse and store the rows, the floor any importer pays.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

from bench.common import Context, scalar
from bench.report import Report, Row
from candlestack.core import db
from candlestack.importer.main import Importer, Options
from tests.harness.settings import postgres_settings

TARGET = 200_000
SYMBOL = "BTCUSDT"
FIRST_DAY = date(2025, 1, 6)

BASELINE_DDL = """
CREATE TABLE copy_baseline (id bigint, price numeric, qty numeric, first_id bigint, last_id bigint, t bigint,
                            maker boolean, best text)
"""


def write_day(folder: Path, day: date, rows: int, first_id: int, rng: random.Random) -> tuple[Path, Path]:
    """One daily archive (zip + .CHECKSUM) and its CSV, ``rows`` aggregate trades over the day."""
    name = f"{SYMBOL}-aggTrades-{day.isoformat()}"
    start_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    step = 86_400_000 / rows
    price = 60_000.0
    csv_path = folder / f"{name}.csv.plain"
    with open(csv_path, "w") as out:
        lines = []
        for n in range(rows):
            price = max(1.0, price + rng.uniform(-5, 5))
            raw = first_id + n * 2
            lines.append(f"{first_id + n},{price:.8f},{rng.random() * 2:.8f},{raw},{raw + 1},"
                         f"{start_ms + int(n * step)},{n % 3 == 0},True\n")
            if len(lines) == 100_000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    zip_path = folder / f"{name}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.write(csv_path, f"{name}.csv")
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    (folder / f"{name}.zip.CHECKSUM").write_text(f"{digest}  {zip_path.name}\n")
    return zip_path, csv_path


def cluster_cpu_s(ctx: Context) -> float:
    """CPU seconds the PostgreSQL cluster has used: the postmaster, its children that have ended
    (backends that closed; the kernel adds them to the postmaster's cutime/cstime), and those alive."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((ctx.pg.datadir / "postmaster.pid").read_text().split()[0])

    def fields(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    own = fields(postmaster)
    total = sum(int(value) for value in own[11:15])  # utime, stime, cutime, cstime
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        try:
            total += sum(int(value) for value in fields(int(child))[11:13])
        except OSError:
            continue  # ended meanwhile: now in cutime
    return total / tick


def run(ctx: Context, report: Report) -> None:
    days, per_day = (1, 500_000) if ctx.quick else (3, 1_000_000)
    total = days * per_day
    folder = ctx.workdir / "archive"
    folder.mkdir(exist_ok=True)
    rng = random.Random(15)
    began = time.monotonic()
    files = [write_day(folder, FIRST_DAY + timedelta(days=n), per_day, 1 + n * per_day, rng) for n in range(days)]
    print(f"import: wrote {days} archive file(s), {total:,} lines, in {time.monotonic() - began:.0f} s", flush=True)

    # Baseline first: the plain COPY of the same lines, one file after another.
    base_db = ctx.database("copy")
    conn = ctx.connect(base_db)
    try:
        with conn.cursor() as cur:
            cur.execute(BASELINE_DDL)
        began, cpu_before = time.monotonic(), cluster_cpu_s(ctx) + time.process_time()
        for _, csv_path in files:
            with conn.cursor() as cur, open(csv_path, "rb") as handle:
                cur.copy_expert("COPY copy_baseline FROM STDIN WITH (FORMAT csv)", handle, size=1 << 20)
        baseline_s = time.monotonic() - began
        baseline_cpu_s = cluster_cpu_s(ctx) + time.process_time() - cpu_before
        assert scalar(conn, "SELECT count(*) FROM copy_baseline") == total
    finally:
        conn.close()
    for _, csv_path in files:
        csv_path.unlink()

    database = ctx.database("import")
    connect = partial(db.connect, postgres_settings(ctx.pg, database))
    load_before = os.getloadavg()
    began, cpu_before = time.monotonic(), cluster_cpu_s(ctx) + time.process_time()
    summary = Importer(connect, Options(paths=(folder,))).run()
    seconds = time.monotonic() - began
    cpu_s = cluster_cpu_s(ctx) + time.process_time() - cpu_before
    load_after = os.getloadavg()
    again_began = time.monotonic()
    again = Importer(connect, Options(paths=(folder,))).run()
    again_s = time.monotonic() - again_began
    check = ctx.connect(database)
    try:
        stored = scalar(check, "SELECT count(*) FROM trades")
    finally:
        check.close()
    assert summary.inserted == total and stored == total, (summary, stored)
    assert again.inserted == 0 and again.skipped == days

    rate = total / seconds
    baseline_rate = total / baseline_s
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)"
    report.add(Row("import", "trades imported per second", rate, "trades/s", baseline=baseline_rate,
                   baseline_label="plain COPY of the same CSV, no keys", target=f">= {TARGET:,} trades/s",
                   met=rate >= TARGET,
                   note=f"{total:,} trades in {days} daily zip(s) in {seconds:.1f} s (sha256, unzip, COPY, "
                        f"INSERT ... ON CONFLICT into partitioned trades); {load}"))
    report.add(Row("import", "trades imported per CPU second", total / cpu_s, "trades/CPU-s",
                   baseline=total / baseline_cpu_s, baseline_label="plain COPY of the same CSV, no keys",
                   note=(f"{cpu_s:.1f} CPU-s of PostgreSQL's processes and the importer "
                         f"(baseline {baseline_cpu_s:.1f}): the rate on one core of a machine to ourselves")))
    report.add(Row("import", "re-import of the same files", again_s, "s", note=(
        f"0 new rows: {again.skipped} files skipped by name and sha256 (checksums computed again)")))
    report.details["import"] = {"trades": total, "seconds": round(seconds, 2), "baseline_seconds": round(baseline_s, 2),
                                "loadavg_before": load_before, "loadavg_after": load_after,
                                "reimport_seconds": round(again_s, 2), "cpu_seconds": round(cpu_s, 2),
                                "baseline_cpu_seconds": round(baseline_cpu_s, 2)}

