"""The ``candlestack`` command: one entry point, a subcommand per component.

Components are imported lazily so that ``candlestack consumer`` does not load Spark, and a host
that runs only the producer does not need pyspark installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from candlestack.core.errors import ArchiveError, DatabaseError, SettingsError, StreamKindError
from candlestack.core.setting_table import RETENTION_MIN_DAYS
from candlestack.core.settings import read_env_file
from candlestack.importer.cli import add_arguments as import_arguments

log = logging.getLogger("candlestack")


def _utc(text: str) -> datetime:
    """Parse an ISO date/time; naive values are UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _keep_days(text: str) -> int:
    """``--keep-days``: whole days, at least what the database's retention function accepts."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if days < RETENTION_MIN_DAYS:
        raise argparse.ArgumentTypeError(f"{days} is too few: at least {RETENTION_MIN_DAYS} days are kept "
                                         "(the database refuses to drop younger partitions)")
    return days


STATUS_EXIT_CODES = ("exit codes: 0 healthy, 1 needs attention, 69 PostgreSQL unreachable, "
                     "70 other database error, 77 permission denied, 78 bad settings")
ENV_FILE_HELP = ("read CANDLESTACK_* settings from this KEY=VALUE file first, '-' for standard input "
                 "(its values win over the environment)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="candlestack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("producer", help="stream Binance trades into Kafka (settings from CANDLESTACK_* variables)")
    sub.add_parser("consumer", help="store trades from Kafka in PostgreSQL")

    agg = sub.add_parser("aggregator", help="build OHLCV candles with Spark")
    agg_sub = agg.add_subparsers(dest="mode", required=True)
    agg_sub.add_parser("run", help="keep a Spark application up and refresh touched windows every tick")
    backfill = agg_sub.add_parser("backfill", help="rebuild the candles of a time range")
    backfill.add_argument("--from", dest="start", type=_utc, required=True, help="start, ISO 8601 (UTC if naive)")
    backfill.add_argument("--to", dest="end", type=_utc, required=True, help="end (exclusive), ISO 8601")
    backfill.add_argument("--symbols", help="comma-separated symbols (default: every symbol with trades)")
    reconcile = agg_sub.add_parser("reconcile", help="backfill the recent past (for a timer)")
    reconcile.add_argument("--hours", type=float, default=2.0, help="how far back, in hours (default 2)")

    imp = sub.add_parser("import", help="load Binance's trade archives (data.binance.vision) into trades, "
                                        "then rebuild their candles")
    import_arguments(imp)

    sub.add_parser("replay", help="serve a Binance-protocol replay feed (WebSocket + REST); "
                            "`candlestack replay --help` lists its options", add_help=False)

    db = sub.add_parser("db", help="database administration")
    db.add_argument("--env-file", metavar="FILE", help=ENV_FILE_HELP)
    db_sub = db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("migrate", help="apply pending schema migrations (safe to re-run)")
    retention = db_sub.add_parser("retention", help="drop raw-trade partitions older than the retention")
    retention.add_argument("--keep-days", type=_keep_days, metavar="N",
                           help=f"days to keep, at least {RETENTION_MIN_DAYS} "
                                "(default CANDLESTACK_RETENTION_DAYS or 30)")
    partitions = db_sub.add_parser("partitions", help="create the raw-trade partitions of today and the next days")
    partitions.add_argument("--ahead", type=int, choices=range(367), metavar="N",
                            help="days after today (default CANDLESTACK_PARTITIONS_AHEAD_DAYS or 3)")

    status = sub.add_parser("status", help="per-symbol freshness and lag, gaps, dead letters, incomplete candles; "
                                           "exit 0 healthy, 1 needs attention",
                            epilog=STATUS_EXIT_CODES)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--env-file", metavar="FILE", help=ENV_FILE_HELP)
    status.add_argument("--stale-after", type=float, default=300.0, metavar="SECONDS",
                        help="a trade age, ingest or candle lag above this needs attention (default 300)")
    audit = sub.add_parser("audit", help="compare recently closed candles with Binance's /api/v3/klines, field by "
                                          "field; store mismatches; exit 0 all equal, 1 mismatches found",
                           epilog="exit codes: 0 all equal, 1 mismatches found, 69 Binance or PostgreSQL "
                                  "unreachable (or Binance refusing a symbol), 70 other database error, "
                                  "76 malformed klines, 77 permission "
                                  "denied, 78 bad settings")
    audit.add_argument("--env-file", metavar="FILE", help=ENV_FILE_HELP)
    audit.add_argument("--from", dest="start", type=_utc,
                       help="first window, ISO 8601 (default: CANDLESTACK_AUDIT_LOOKBACK_MINUTES before --to)")
    audit.add_argument("--to", dest="end", type=_utc,
                       help="windows closed by then (default: now minus CANDLESTACK_AUDIT_SETTLE_S)")
    audit.add_argument("--symbols", help="comma-separated symbols (default CANDLESTACK_SYMBOLS)")
    return parser


def run(args: argparse.Namespace) -> int:
    # Imports are local so each subcommand loads only what it needs.
    if args.command in ("producer", "consumer", "aggregator"):
        return _run_component(args)
    return _run_tool(args)


def _run_component(args: argparse.Namespace) -> int:
    """The long-running pipeline components."""
    if args.command == "producer":
        from candlestack.producer.main import main as producer_main  # noqa: PLC0415

        return producer_main()
    if args.command == "consumer":
        from candlestack.consumer.main import main as consumer_main  # noqa: PLC0415

        return consumer_main()
    if args.command == "aggregator":
        from candlestack.aggregator.main import main as aggregator_main  # noqa: PLC0415

        return aggregator_main(args)
    raise AssertionError(args.command)


def _run_tool(args: argparse.Namespace) -> int:
    """The operator's commands (some run from timers)."""
    if args.command == "db":
        from candlestack.admin import db_command  # noqa: PLC0415

        return db_command(args)
    if args.command == "import":
        from candlestack.importer.main import import_command  # noqa: PLC0415

        environ = {**os.environ, **read_env_file(args.env_file)} if args.env_file else None
        return import_command(args, environ)
    if args.command == "audit":
        from candlestack.audit.command import audit_command  # noqa: PLC0415

        return audit_command(args)
    if args.command == "status":
        from candlestack.admin import status_command  # noqa: PLC0415

        return status_command(args)
    raise AssertionError(args.command)


def replay_main(argv: list[str]) -> int:
    """The replay feed keeps its own parser (its options are many and its own)."""
    from candlestack.replay.cli import add_arguments  # noqa: PLC0415
    from candlestack.replay.cli import main as run_replay  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="candlestack replay", description="Binance-protocol replay feed")
    add_arguments(parser)
    return run_replay(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["replay"]:
        return replay_main(words[1:])
    args = build_parser().parse_args(words)
    try:
        return run(args)
    except SettingsError as exc:
        # One clear line for the journal; exit code 78 is EX_CONFIG, which systemd units can
        # list in RestartPreventExitStatus= so a bad setting does not restart-loop.
        print(f"candlestack: configuration error: {exc}", file=sys.stderr)
        return 78
    except DatabaseError as exc:
        # db and status only; 69 unreachable, 77 permission denied, 70 any other database error.
        print(f"candlestack: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ArchiveError, StreamKindError) as exc:
        print(f"candlestack: {exc}", file=sys.stderr)
        return 65  # EX_DATAERR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
