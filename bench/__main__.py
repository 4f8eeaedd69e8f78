"""``python -m bench [--only ingest,latency,live,freshness,symbols,backfill,import] [--quick]``: run the benchmarks.

Starts one PostgreSQL cluster and one Tansu broker for the whole run (and a Spark standalone
cluster when the backfill benchmark is selected) through tests/harness/services.py, runs each selected
benchmark, prints its table, and writes bench/results/latest.json and latest.md. Peak memory of
every component is sampled throughout and reported last (the ``rss`` table).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import Context
from bench.report import Report, Row, table, write
from bench.rss import RssTracker
from tests.harness.services import postgres_cluster, spark_standalone, tansu_broker

BENCHMARKS = ("ingest", "latency", "live", "freshness", "symbols", "backfill", "import")


def _runner(name: str) -> Callable[[Context, Report], None]:
    # Imported lazily: the backfill module loads pyspark.
    if name == "ingest":
        from bench import ingest  # noqa: PLC0415

        return ingest.run
    if name == "latency":
        from bench import latency  # noqa: PLC0415

        return latency.run
    if name == "freshness":
        from bench import freshness  # noqa: PLC0415

        return freshness.run
    if name == "live":
        from bench import live  # noqa: PLC0415

        return live.run
    if name == "symbols":
        from bench import symbols  # noqa: PLC0415

        return symbols.run
    if name == "import":
        from bench import import_rate  # noqa: PLC0415

        return import_rate.run
    from bench import backfill  # noqa: PLC0415

    return backfill.run


def rss_rows(ctx: Context, report: Report) -> None:
    for name, peak in sorted(ctx.rss.peaks.items()):
        report.add(Row("rss", f"peak RSS {name}", peak.tree_rss_mib, "MiB", note=(
            f"process tree ({peak.processes} procs) sampled every 200 ms; own VmHWM {peak.hwm_mib:.0f} MiB")))


def _sizes(text: str) -> tuple[int, ...]:
    """``1M,10M,300k`` → (1000000, 10000000, 300000)."""
    factors = {"k": 1_000, "m": 1_000_000}
    sizes = []
    for item in filter(None, (part.strip().lower() for part in text.split(","))):
        factor = factors.get(item[-1], 1)
        digits = item[:-1] if item[-1] in factors else item
        if not digits.isdigit() or int(digits) == 0:
            raise argparse.ArgumentTypeError(f"not a trade count: {item!r}")
        sizes.append(int(digits) * factor)
    return tuple(sizes)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all; rss is always reported)")
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (about 10 minutes)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile our consumer with py-spy in an extra ingest run (about +30 s)")
    parser.add_argument("--backfill-sizes", type=_sizes, default=(), metavar="N,N,...",
                        help="trade counts for the backfill benchmark, e.g. 1M,10M,30M "
                             "(default: 1M,10M,30M; with --quick 300k)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (component logs)")
    args = parser.parse_args(argv)
    args.selected = [name.strip() for name in args.only.split(",") if name.strip() and name.strip() != "rss"]
    unknown = [name for name in args.selected if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = Report(quick=args.quick)
    workdir = Path(tempfile.mkdtemp(prefix="candlestack-bench-"))
    rss = RssTracker()
    rss.start()
    print(f"bench: {'quick' if args.quick else 'full'} run of {', '.join(args.selected)}; work dir {workdir}",
          flush=True)
    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(postgres_cluster())
            broker = stack.enter_context(tansu_broker())
            ctx = Context(pg=pg, broker=broker, workdir=workdir, rss=rss, quick=args.quick,
                          profile=args.profile, backfill_sizes=args.backfill_sizes)
            for name in args.selected:
                if name == "backfill" and ctx.spark is None:
                    spark_dir = workdir / "spark"
                    spark_dir.mkdir()
                    ctx.spark = stack.enter_context(spark_standalone(spark_dir, cores=2, memory="1g"))
                began = time.monotonic()
                print(f"\n== {name} ==", flush=True)
                try:
                    _runner(name)(ctx, report)
                except Exception as exc:
                    report.errors[name] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                report.details.setdefault("seconds", {})[name] = round(time.monotonic() - began, 1)
                rows = [row for row in report.rows if row.benchmark == name]
                if rows:
                    print(table(rows), flush=True)
                print(f"({name}: {time.monotonic() - began:.0f} s)", flush=True)
                write(report)
    finally:
        rss.stop()
        rss_rows(ctx, report) if "ctx" in locals() else None
        paths = write(report)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n== rss ==")
    print(table([row for row in report.rows if row.benchmark == "rss"]))
    print(f"\nwrote {paths[0]} and {paths[1]} ({time.time() - report.started:.0f} s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
