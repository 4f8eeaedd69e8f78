"""Faults on the deployed all-in-one host, driven from outside with systemctl, kill and podman.

Each case injects its fault while the replay feed publishes (synthetic trades with consecutive
ids), waits until the pipeline has caught up, pauses the feed and checks the promise: every id
the feed published is stored or recorded in ``ingest_gaps``, no duplicates, candles equal a
recomputation from the stored trades with no filler over missing ids, every unit active.
The cases run in this order and share the host; each leaves it running.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.deployed.case import Case
from tests.deployed.host import DeployedHost, deadline_wait

pytestmark = [pytest.mark.deployed, pytest.mark.timeout(900)]

PRODUCER = "candlestack-producer"
CONSUMER = "candlestack-consumer"
AGGREGATOR = "candlestack-aggregator"


def kill(host: DeployedHost, unit: str) -> None:
    """SIGKILL the unit's main process, as a crash would; systemd restarts it."""
    pid = host.main_pid(unit)
    assert pid > 0, f"{unit} has no main process"
    host.systemctl("kill", "--kill-whom=main", "--signal=SIGKILL", unit)
    # systemd first stops what is left in the unit's cgroup (a Spark worker's executor JVM may
    # take a while), then restarts it after RestartSec.
    deadline_wait(lambda: host.main_pid(unit) not in (0, pid), timeout=180, interval=1.0, what=f"{unit} restarted")


def test_producer_restarted_five_times_during_ingest(host: DeployedHost, case: Case) -> None:
    for _ in range(5):
        host.systemctl("restart", PRODUCER)
        time.sleep(3)
    case.fault_over()
    row = case.check()
    assert row.missing == 0


def test_producer_killed(host: DeployedHost, case: Case) -> None:
    time.sleep(2)
    kill(host, PRODUCER)
    case.fault_over()
    row = case.check()
    assert row.missing == 0


def test_producer_stopped_for_a_minute(host: DeployedHost, case: Case) -> None:
    host.systemctl("stop", PRODUCER)
    time.sleep(60)
    host.systemctl("start", PRODUCER)
    case.fault_over()
    row = case.check()
    assert row.missing == 0


def test_rest_rate_limited_during_the_catch_up(host: DeployedHost, case: Case) -> None:
    host.systemctl("stop", PRODUCER)
    time.sleep(5)
    started_ms = int(time.time() * 1000)
    host.replay("/_replay/rest-fault?mode=429&count=3&retry_after=2")
    host.systemctl("start", PRODUCER)
    case.fault_over()
    row = case.check()
    host.replay("/_replay/rest-fault?mode=off")
    assert row.missing == 0
    log = [entry for entry in host.replay("/_replay/rest-log", method="GET") if entry["t"] >= started_ms]
    refused = [i for i, entry in enumerate(log) if entry["status"] == 429]
    assert len(refused) == 3, log
    for i in refused:
        assert i + 1 < len(log), "no request after a 429"
        assert log[i + 1]["t"] - log[i]["t"] >= 1900, f"Retry-After: 2 not honoured: {log[i:i + 2]}"


def test_consumer_killed_five_times(host: DeployedHost, case: Case) -> None:
    for _ in range(5):
        time.sleep(2)
        kill(host, CONSUMER)
        host.wait_active(CONSUMER)
    case.fault_over()
    row = case.check()
    assert row.missing == 0


def _trade(symbol: str, trade_id: int, *, trade_time: int, price: str = "1.5") -> dict[str, object]:
    now = int(time.time() * 1000)
    return {"v": 1, "kind": "trade", "symbol": symbol, "stream": "trade", "trade_id": trade_id,
            "first_trade_id": None, "last_trade_id": None, "price": price, "qty": "1",
            "trade_time": trade_time, "event_time": trade_time, "buyer_is_maker": False, "ingest_time": now}


def poison_messages(symbol: str) -> list[tuple[str, bytes]]:
    """Messages that once stopped the consumer, each a (what, payload) pair."""
    now = int(time.time() * 1000)
    return [
        ("bigint overflow", json.dumps(_trade(symbol, 2**63, trade_time=now)).encode()),
        ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000),
        ("5,000-digit number", b'{"v": 1, "kind": "trade", "trade_id": ' + b"9" * 5000 + b"}"),
        ("NUL in a string", json.dumps(_trade(symbol + "\x00", 1, trade_time=now)).encode()),
        ("trade dated 2099", json.dumps(_trade(symbol, 1, trade_time=4_070_908_800_000)).encode()),
        ("symbol not configured", json.dumps(_trade("NOTCONFIGURED", 1, trade_time=now)).encode()),
    ]


# Daily partitions of trades beyond the month ahead: the partitions job (candlestack-partitions.timer)
# creates the next few days whenever it fires, which may be during a case.
FAR_PARTITIONS = ("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                  "WHERE i.inhparent = 'trades'::regclass "
                  "AND c.relname ~ '^trades_[0-9]{8}$' "
                  "AND c.relname > 'trades_' || to_char(current_date + 31, 'YYYYMMDD')")


def test_poison_messages_are_dead_lettered_and_the_consumer_stays_up(host: DeployedHost, case: Case) -> None:
    symbol = host.symbols()[0]
    restarts = host.restarts(CONSUMER)
    partitions_before = int(host.scalar(FAR_PARTITIONS))
    poison = poison_messages(symbol)
    host.produce_raw([(symbol.encode(), payload) for _, payload in poison])
    case.fault_over()
    row = case.check(expected_dead_letters=len(poison))
    assert host.restarts(CONSUMER) == restarts, "the consumer restarted"
    partitions_after = int(host.scalar(FAR_PARTITIONS))
    assert partitions_after - partitions_before <= 1  # the trade dated 2099 must not create every day up to it
    reasons = host.sql("SELECT reason FROM dead_letters ORDER BY id DESC LIMIT :n", n=len(poison))
    assert all(r[0] for r in reasons)
    assert row.missing == 0


def test_postgresql_restarted_during_ingest_and_aggregation(host: DeployedHost, case: Case) -> None:
    restarts = host.restarts(AGGREGATOR)
    for _ in range(2):
        time.sleep(3)
        host.systemctl("restart", host.postgres_unit)
    case.fault_over()
    row = case.check()
    assert host.restarts(AGGREGATOR) == restarts, "the aggregator restarted"
    assert row.missing == 0


def test_aggregator_restarted_mid_backfill(host: DeployedHost, case: Case) -> None:
    # Without a watermark the aggregator first rebuilds every stored trade's candles. It is
    # stopped first: a running one would save its watermark again at its next tick.
    host.systemctl("stop", AGGREGATOR)
    host.sql("DELETE FROM aggregator_state")
    since = host.exec(["date", "+%Y-%m-%d %H:%M:%S"]).strip()
    host.systemctl("start", AGGREGATOR)
    deadline_wait(lambda: "backfill starting" in host.journal(AGGREGATOR, since), timeout=180, interval=0.5,
                  what="the initial backfill to start")
    host.systemctl("restart", AGGREGATOR)
    case.fault_over()
    case.check()
    assert host.scalar("SELECT count(*) FROM aggregator_state") == "1"


def test_spark_worker_killed_during_a_tick(host: DeployedHost, case: Case) -> None:
    restarts = host.restarts(AGGREGATOR)
    time.sleep(3)
    kill(host, "spark-worker")
    case.fault_over()
    case.check()
    assert host.restarts(AGGREGATOR) == restarts, "the aggregator restarted"


def test_spark_master_restarted(host: DeployedHost, case: Case) -> None:
    time.sleep(3)
    host.systemctl("restart", "spark-master")
    case.fault_over()
    case.check()


def test_host_rebooted(host: DeployedHost, case: Case) -> None:
    """The whole container restarts: systemd stops every unit, then boots them again.

    Two things restart empty in the lab: Tansu (memory only: what it held unconsumed is gone)
    and the replay feed (a new market whose ids continue above the old ones). The trades the
    old feed published in the last seconds before the reboot are compared with what was stored:
    that is what the producer's resume and the consumer's drain saved, and what Tansu lost.
    """
    time.sleep(3)
    host.replay("/_replay/pause")
    last_old = {symbol: set(host.published_ids(symbol)[-200:]) for symbol in host.symbols()}
    subprocess.run(["podman", "restart", "--time", "90", host.name], check=True, capture_output=True, timeout=300)
    case.fault_over()
    host.wait_active("candlestack-replay", timeout=300)
    case.rebase()
    row = case.check()
    lost = 0
    for symbol, ids in last_old.items():
        stored = {int(r[0]) for r in host.sql(
            "SELECT trade_id FROM trades WHERE symbol = :'symbol' AND trade_id BETWEEN :low AND :high",
            symbol=symbol, low=min(ids), high=max(ids))}
        lost += len(ids - stored)
    row.missing += lost
    print(f"reboot: {sum(map(len, last_old.values()))} trades published just before it, {lost} not stored")
    assert row.in_gaps == 0 or row.missing >= row.in_gaps
