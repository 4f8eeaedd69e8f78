"""The arguments of ``candlestack import``, apart from the command, so that building the parser
of every other subcommand loads nothing of it."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

# Lines are read, staged and inserted in blocks of about this many bytes (16 MiB: about 200,000
# aggTrades lines), one transaction each.
BLOCK_BYTES = 16 << 20


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="archive files (.zip or .csv) or directories holding them; instead of --base-url")
    parser.add_argument("--base-url", help="an archive with the data.binance.vision layout, e.g. "
                                           "https://data.binance.vision (files under data/spot/daily|monthly/...)")
    parser.add_argument("--symbols", help="comma-separated symbols (required with --base-url)")
    parser.add_argument("--kind", choices=("trades", "aggTrades"),
                        help="archive type: trades (stream 'trade') or aggTrades (stream 'aggTrade'); "
                             "required with --base-url")
    parser.add_argument("--from", dest="first", type=_date, help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--to", dest="last", type=_date, help="last day, inclusive, YYYY-MM-DD (UTC)")
    parser.add_argument("--download-dir", type=Path,
                        help="where downloads go while they load (default: a new temporary directory)")
    parser.add_argument("--keep-downloads", action="store_true", help="keep downloaded files")
    parser.add_argument("--force", action="store_true",
                        help="load files already recorded as imported again (inserts only what is missing)")
    parser.add_argument("--no-backfill", action="store_true",
                        help="do not rebuild the candles of the imported range afterwards")
    parser.add_argument("--backfill-env-file", metavar="FILE",
                        help="CANDLESTACK_* settings for the backfill (the aggregator's login and Spark), "
                             "default: those of the import")
    parser.add_argument("--env-file", metavar="FILE",
                        help="read CANDLESTACK_* settings from this KEY=VALUE file first, '-' for standard input")
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 17), metavar="N",
                        help="blocks loaded at the same time, each over its own connection (default 2)")
    parser.add_argument("--block-bytes", type=int, default=BLOCK_BYTES, help=argparse.SUPPRESS)
    parser.add_argument("--die-after-blocks", type=int, help=argparse.SUPPRESS)
