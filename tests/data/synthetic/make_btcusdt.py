"""Writes BTCUSDT-aggTrades-synthetic.csv: a second symbol for the reference tests.

The real XRPETH data has whole-number quantities only, so a bug that dropped or rounded decimal
places in quantities could hide behind it. These trades have fractional quantities (up to 8
decimals, many below 1), prices with 2 decimals around 8,000, consecutive aggregate ids with 1-3
raw trades each, ties in time, and quiet minutes. They cover the same hours as the XRPETH file, in
the data.binance.vision aggTrades layout without header. Deterministic: run it again to get the
same file.
"""

from __future__ import annotations

import random
from pathlib import Path

START_MS = 1_570_752_000_000  # 2019-10-11 00:00 UTC, like the XRPETH file
HOURS = 6
COUNT = 6_000
FIRST_AGG_ID = 180_000_000
FIRST_RAW_ID = 190_000_000


def rows() -> list[str]:
    rng = random.Random(20191011)
    price_cents = 856_000
    agg_id, raw_id = FIRST_AGG_ID, FIRST_RAW_ID
    times = sorted(START_MS + rng.randrange(HOURS * 3_600_000) for _ in range(COUNT))
    # Quiet spells: no trades in a few whole minutes (Binance still publishes their candles).
    quiet = {START_MS + m * 60_000 for m in rng.sample(range(HOURS * 60), 40)}
    out = []
    for time_ms in times:
        if time_ms - time_ms % 60_000 in quiet:
            continue
        price_cents = max(100, price_cents + rng.choice((-300, -100, -1, 0, 0, 1, 100, 300)))
        qty_units = rng.choice((rng.randrange(1, 100_000), rng.randrange(1, 300_000_000)))
        raw = rng.randint(1, 3)
        out.append(f"{agg_id},{price_cents // 100}.{price_cents % 100:02d},{qty_units // 10**8}."
                   f"{qty_units % 10**8:08d},{raw_id},{raw_id + raw - 1},{time_ms},{rng.random() < 0.5},True")
        agg_id += 1
        raw_id += raw
    return out


if __name__ == "__main__":
    target = Path(__file__).with_name("BTCUSDT-aggTrades-synthetic.csv")
    target.write_text("\n".join(rows()) + "\n")
    print(f"wrote {target}")
