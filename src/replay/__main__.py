"""``python -m candlestack.replay ...``: the same as ``candlestack replay ...``."""

from __future__ import annotations

import argparse
import sys

from candlestack.replay.cli import add_arguments, main


def run() -> int:
    parser = argparse.ArgumentParser(prog="python -m candlestack.replay", description="Binance-protocol replay feed")
    add_arguments(parser)
    try:
        return main(parser.parse_args())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run())
