"""``candlestack replay`` (also ``python -m candlestack.replay``): serve a Binance-protocol replay feed.

Examples::

    # the recorded XRPETH file, original timing, clock starting when the producer subscribes
    candlestack replay --csv tests/data/binance/XRPETH-aggTrades-2019-10-11_to_2019-10-13.csv \\
        --speed 60 --retime
    # two synthetic markets at 200 trades/s, dropping every connection each 30 s
    candlestack replay --synthetic BTCUSDT,ETHUSDT --rate 200 --disconnect-every 30

This module imports nothing heavy at load time: ``candlestack --help`` builds its parser.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from candlestack.core.contract import normalise_symbol
from candlestack.core.errors import ContractError, SettingsError
from candlestack.replay.faults import RestFaults
from candlestack.replay.feed import Feed, Pace
from candlestack.replay.model import ReplayTrade, SourceError
from candlestack.replay.sources import CsvSource, MergedSource, SyntheticSource, looped, parse_csv_argument

if TYPE_CHECKING:
    from candlestack.replay.server import ServerOptions

DEFAULT_LISTEN = "127.0.0.1:9443"
DEFAULT_SYNTHETIC_RATE = 10.0
# A symbol's history keeps 250,000 to 500,000 trades at about 370 bytes each: under 200 MB.
DEFAULT_MAX_HISTORY = 250_000


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9443`` for IPv6); port 0 picks a free port.

    Raises:
        SettingsError: not of that form.
    """
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise SettingsError("--listen", f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


def _start_id(text: str) -> int:
    if text == "clock":
        return time.time_ns() // 1_000_000
    return _positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the replay options on ``parser`` (the ``replay`` subcommand's)."""
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address for WebSocket and REST (default {DEFAULT_LISTEN}; port 0 picks one)")

    source = parser.add_argument_group("sources (at least one; several merge in trade-time order)")
    source.add_argument("--csv", action="append", default=[], metavar="PATH[=SYMBOL]",
                        help="a data.binance.vision trades or aggTrades CSV; the symbol defaults to the "
                             "file name up to the first '-'. Repeatable.")
    source.add_argument("--synthetic", metavar="SYM1,SYM2",
                        help="generate random-walk trades for these symbols (trade time = now)")
    source.add_argument("--count", type=_positive_int, metavar="N",
                        help="stop the synthetic source after N trades in all (default: never)")
    source.add_argument("--seed", type=int, help="seed of the synthetic source (default: random)")
    source.add_argument("--start-id", type=_start_id, metavar="ID|clock",
                        help="first trade id of every synthetic symbol (default: drawn from the seed); "
                             "'clock': the current Unix time in ms, so that a restarted feed's ids "
                             "continue above the ones it published before (below 1,000 trades/s a symbol)")
    source.add_argument("--loop", action="store_true",
                        help="replay the CSV files forever, ids and times shifted forward each round")

    pace = parser.add_argument_group("pace (default: --speed 1 for files, --rate 10 for synthetic)")
    exclusive = pace.add_mutually_exclusive_group()
    exclusive.add_argument("--speed", type=_positive_float, metavar="F",
                           help="the original inter-trade timing divided by F; 0 = as fast as possible")
    exclusive.add_argument("--rate", type=_positive_float, metavar="N", help="N trades a second, whatever the timing")
    exclusive.add_argument("--as-fast-as-possible", action="store_true",
                           help="as fast as the slowest connected reader takes them")
    pace.add_argument("--retime", action="store_true",
                      help="shift trade and event times so that the first trade happens now")
    pace.add_argument("--start", choices=("on-connect", "immediately"), default="on-connect",
                      help="start the market clock at the first subscription (default) or at once")

    connection = parser.add_argument_group("connections (like Binance)")
    connection.add_argument("--ping-interval", type=_positive_float, default=180.0, metavar="S",
                            help="seconds between server pings (default 180; 0 = none)")
    connection.add_argument("--ping-timeout", type=_positive_float, default=60.0, metavar="S",
                            help="drop a client that has not answered a ping within S seconds (default 60)")
    connection.add_argument("--max-connection-age", type=_positive_float, default=86_400.0, metavar="S",
                            help="close a connection S seconds after it opened (default 86400; 0 = never)")

    faults = parser.add_argument_group("fault injection (on demand too: POST /_replay/disconnect, ...)")
    faults.add_argument("--disconnect-every", type=_positive_float, metavar="S",
                        help="close every client connection each S seconds; the market keeps going")
    faults.add_argument("--disconnect-mode", choices=("close", "abort"), default="close",
                        help="a WebSocket close (1001) or a dropped TCP connection (default close)")
    faults.add_argument("--malformed-every", type=_positive_int, metavar="N",
                        help="send a malformed frame after every N trade frames of a connection")
    faults.add_argument("--duplicate-every", type=_positive_int, metavar="N",
                        help="send every Nth trade frame of a connection twice")
    faults.add_argument("--shutdown-after", type=_positive_float, metavar="S",
                        help="S seconds after a connection opens, send it serverShutdown, then close it")
    faults.add_argument("--shutdown-grace", type=_positive_float, default=0.5, metavar="S",
                        help="seconds between serverShutdown and the close (default 0.5)")
    faults.add_argument("--rest-fault", choices=("429", "418", "truncate"),
                        help="answer REST requests with 429 or 418 (with Retry-After) or a body cut short "
                             "(switch at run time: POST /_replay/rest-fault?mode=...)")
    faults.add_argument("--rest-fault-count", type=_positive_int, metavar="N",
                        help="only the first N REST answers get the fault (default: all)")
    faults.add_argument("--rest-retry-after", type=_positive_int, default=1, metavar="S",
                        help="the Retry-After of 429/418 answers, in whole seconds (default 1)")

    other = parser.add_argument_group("other")
    other.add_argument("--max-history", type=_positive_int, default=DEFAULT_MAX_HISTORY, metavar="N",
                       help=f"published trades kept per symbol for REST (default {DEFAULT_MAX_HISTORY:,}; "
                            "0 = all)")
    other.add_argument("--progress-every", type=_positive_float, default=5.0, metavar="S",
                       help="seconds between progress log lines (default 5; 0 = none)")


def main(args: argparse.Namespace) -> int:
    """Run the replay feed until SIGTERM/SIGINT: 0 on a clean stop, 1 if it failed, 78 (EX_CONFIG,
    as for every ``candlestack`` command) for bad options or an unusable source.
    """
    # Imported here so that building the ``candlestack`` parser stays light.
    import asyncio  # noqa: PLC0415

    from candlestack.core.logs import setup  # noqa: PLC0415
    from candlestack.core.settings import Env, LogSettings  # noqa: PLC0415
    from candlestack.replay.server import serve_feed  # noqa: PLC0415

    try:
        setup(LogSettings.from_env(Env()))
        feed, options = build(args)
    except SettingsError as exc:
        print(f"candlestack: configuration error: {exc}", file=sys.stderr)
        return 78
    return asyncio.run(serve_feed(feed, options))


def rest_faults(args: argparse.Namespace) -> RestFaults:
    """The REST fault switch at start, from ``--rest-fault*``.

    Raises:
        SettingsError: ``--rest-fault-count`` without ``--rest-fault``.
    """
    if args.rest_fault is None:
        if args.rest_fault_count is not None:
            raise SettingsError("--rest-fault-count", "only applies with --rest-fault")
        return RestFaults()
    return RestFaults(mode=args.rest_fault, count=args.rest_fault_count, retry_after=args.rest_retry_after)


def build(args: argparse.Namespace) -> tuple[Feed, ServerOptions]:
    """Turn parsed options into a feed and server options.

    Raises:
        SettingsError: a bad combination of options or an unusable source.
    """
    from candlestack.replay.server import ServerOptions  # noqa: PLC0415 - loads websockets

    host, port = parse_listen(args.listen)
    if not args.csv and not args.synthetic:
        raise SettingsError("--csv/--synthetic", "give at least one source of trades")
    try:
        files = [CsvSource(*parse_csv_argument(text)) for text in args.csv]
        file_total = sum(source.count() for source in files)
    except SourceError as exc:
        raise SettingsError("--csv", str(exc)) from None

    synthetic: SyntheticSource | None = None
    if args.synthetic:
        try:
            symbols = tuple(dict.fromkeys(normalise_symbol(s) for s in args.synthetic.split(",") if s.strip()))
        except ContractError as exc:
            raise SettingsError("--synthetic", exc.reason) from None
        if not symbols:
            raise SettingsError("--synthetic", "lists no symbol")
        synthetic = SyntheticSource(symbols, seed=args.seed, start_id=args.start_id, count=args.count)
    elif args.count is not None:
        raise SettingsError("--count", "only applies to --synthetic")

    if args.as_fast_as_possible or args.speed == 0:
        pace = Pace(speed=None)
    elif args.rate is not None:
        if args.rate == 0:
            raise SettingsError("--rate", "must be positive")
        pace = Pace(speed=None, rate=args.rate)
    elif args.speed is not None:
        if synthetic is not None:
            # Synthetic trades are stamped "now" as they are drawn: there is no timing to scale.
            raise SettingsError("--speed", "does not apply to --synthetic; use --rate or --as-fast-as-possible")
        pace = Pace(speed=args.speed)
    else:
        pace = Pace(speed=None, rate=DEFAULT_SYNTHETIC_RATE) if synthetic is not None else Pace(speed=1.0)

    parts: list[Iterable[ReplayTrade]] = []
    if files:
        merged_files = MergedSource(files)
        parts.append(looped(merged_files) if args.loop else merged_files)
    elif args.loop:
        raise SettingsError("--loop", "only applies to --csv files")
    if synthetic is not None:
        parts.append(synthetic)
    total: int | None = None
    if not args.loop and (synthetic is None or synthetic.count is not None):
        total = file_total + (synthetic.count if synthetic is not None and synthetic.count else 0)
    known = {source.symbol for source in files} | set(synthetic.symbols if synthetic is not None else ())
    feed = Feed(
        MergedSource(parts), symbols=sorted(known), pace=pace, retime=args.retime, total=total,
        max_history=args.max_history or None,
    )
    options = ServerOptions(
        host=host,
        port=port,
        start_immediately=args.start == "immediately",
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        max_connection_age=args.max_connection_age or None,
        disconnect_every=args.disconnect_every or None,
        disconnect_abort=args.disconnect_mode == "abort",
        malformed_every=args.malformed_every or None,
        duplicate_every=args.duplicate_every or None,
        shutdown_after=args.shutdown_after or None,
        shutdown_grace=args.shutdown_grace,
        rest_faults=rest_faults(args),
        progress_every=args.progress_every or None,
    )
    return feed, options
