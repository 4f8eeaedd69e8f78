"""The old system's way of ingesting, as a baseline: one INSERT and one COMMIT per message.

Run as ``python -m bench.baseline_consumer ...``; prints one JSON line with its timings.
confluent-kafka + psycopg2 with parameterised SQL, offsets auto-committed (as the old consumer
did), a final synchronous commit once the last row is in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import psycopg2
from confluent_kafka import Consumer

DDL = """
CREATE TABLE IF NOT EXISTS baseline_trades (
    symbol text NOT NULL, trade_id bigint NOT NULL, price numeric NOT NULL, qty numeric NOT NULL,
    trade_time timestamptz NOT NULL, buyer_is_maker boolean NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, trade_id)
)
"""

INSERT = """
INSERT INTO baseline_trades (symbol, trade_id, price, qty, trade_time, buyer_is_maker)
VALUES (%s, %s, %s, %s, timestamptz 'epoch' + %s * interval '1 millisecond', %s)
ON CONFLICT DO NOTHING
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)

    conn = psycopg2.connect(args.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(DDL)
    assigned: list[float] = []
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 5})
    consumer.subscribe([args.topic], on_assign=lambda _c, _p: assigned.append(time.time()))
    first: float | None = None
    stored = 0
    cur = conn.cursor()
    deadline = time.monotonic() + 600
    while stored < args.count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        if first is None:
            first = time.time()
        body: dict[str, Any] = json.loads(message.value())
        cur.execute(INSERT, (body["symbol"], body["trade_id"], body["price"], body["qty"], body["trade_time"],
                             body["buyer_is_maker"]))
        conn.commit()
        stored += 1
    last_row = time.time()
    consumer.commit(asynchronous=False)
    done = time.time()
    consumer.close()
    conn.close()
    print(json.dumps({"assigned": assigned[0] if assigned else None, "first_message": first,
                      "last_row": last_row, "committed": done, "stored": stored}))
    return 0 if stored == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
