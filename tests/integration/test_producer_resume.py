"""The producer across restarts, on real services: the replay feed, Tansu, and (for SIGKILL) the
consumer and PostgreSQL. The feed keeps trading while the producer is down; what it published
must all reach the topic, from the state file's acknowledged ids on, over REST."""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from candlestack.core.contract import Gap, Trade, decode
from tests.harness.pipeline import scalar, stored_ids
from tests.harness.services import Broker, Component, Replay, start_component, start_replay, wait_for

pytestmark = pytest.mark.slow

SYMBOL = "BTCUSDT"
RATE = 400  # trades a second
DOWN_S = 2.0  # how long the producer stays away


def producer_env(broker: Broker, topic: str, replay: Replay, state_dir: Path) -> dict[str, str]:
    return {"CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CANDLESTACK_KAFKA_TOPIC": topic,
            "CANDLESTACK_SYMBOLS": SYMBOL.lower(), "CANDLESTACK_STREAM": "trade",
            "CANDLESTACK_BINANCE_WS_URL": replay.ws_url, "CANDLESTACK_BINANCE_REST_URL": replay.rest_url,
            "CANDLESTACK_PRODUCER_STATE_DIR": str(state_dir),
            "CANDLESTACK_PRODUCER_RECONNECT_INITIAL_S": "0.05", "CANDLESTACK_PRODUCER_RECONNECT_MAX_S": "0.5"}


def saved(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "producer-state.json"
    return dict(json.loads(path.read_bytes())) if path.exists() else {}


def acked(state_dir: Path) -> int:
    return int(saved(state_dir).get("acked", {}).get(SYMBOL, -1))


def topic_messages(broker: Broker, topic: str, *, at_least: int, timeout: float = 30) -> list[Trade | Gap]:
    """Every message of the topic, read from the beginning until ``at_least`` and then quiet."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Trade | Gap] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            if batch:
                quiet_since = time.monotonic()
                messages += [decode(m.value()) for m in batch if m.error() is None]
            elif len(messages) >= at_least and time.monotonic() - quiet_since > 1.0:
                break
        return messages
    finally:
        consumer.close()


def trade_ids(messages: list[Trade | Gap]) -> list[int]:
    return [m.trade_id for m in messages if isinstance(m, Trade)]


def filled(log: str) -> int:
    """Trades the producer fetched over REST, from its "filled gap" and "pending gap filled" lines."""
    return sum(int(n) for n in re.findall(r'msg="(?:filled gap|pending gap filled)".* trades=(\d+)', log))


def run_until_caught_up(replay: Replay, state_dir: Path, producer: Component) -> list[int]:
    """Let the restarted producer catch up, stop the market, wait until all is acknowledged."""
    wait_for(lambda: acked(state_dir) > replay.status()["symbols"][SYMBOL]["first_id"] + 2 * RATE * DOWN_S,
             timeout=30, what=f"the restarted producer to catch up ({producer.log_path})")
    replay.control("pause")
    feed_ids = replay.published_ids(SYMBOL)
    wait_for(lambda: acked(state_dir) == feed_ids[-1] and not saved(state_dir)["pending"], timeout=30,
             what=f"everything acknowledged ({producer.log_path})")
    return feed_ids


def restart_after(first: Component, sig: int, replay: Replay, env: dict[str, str], logdir: Path,
                  state_dir: Path) -> tuple[Component, int]:
    """Run ``first`` for a while, stop it with ``sig``, let the feed go on, start a new producer.

    Returns the new producer and the acknowledged id the state file had when it started.
    """
    wait_for(lambda: acked(state_dir) > 0, timeout=30, what=f"a first state file ({first.log_path})")
    wait_for(lambda: acked(state_dir) - replay.status()["symbols"][SYMBOL]["first_id"] > RATE, timeout=30,
             what="a second of trades")
    first.stop(sig)
    resume_from = acked(state_dir)
    time.sleep(DOWN_S)
    return start_component("producer", ["producer"], env, logdir), resume_from


def restart_with_rest_fault(first: Component, replay: Replay, env: dict[str, str], logdir: Path, state_dir: Path,
                            fault: str) -> tuple[Component, dict[str, Any]]:
    """Stop ``first`` cleanly once it saved state, switch the feed's REST fault on, let the feed
    go on, start a new producer. Returns it and the feed's answer to the fault switch."""
    wait_for(lambda: acked(state_dir) > 0, timeout=30, what=f"a first state file ({first.log_path})")
    assert first.stop() == 0, first.log()
    answer = replay_post(replay, f"rest-fault?{fault}")
    time.sleep(DOWN_S)
    return start_component("producer", ["producer"], env, logdir), answer


def test_sigterm_then_restart_puts_every_trade_on_the_topic_exactly_once(
    broker: Broker, topic: str, logdir: Path, tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    replay = start_replay(["--synthetic", SYMBOL, "--rate", str(RATE), "--seed", "11"], logdir)
    env = producer_env(broker, topic, replay, state_dir)
    first = start_component("producer", ["producer"], env, logdir)
    second: Component | None = None
    try:
        second, resume_from = restart_after(first, signal.SIGTERM, replay, env, logdir, state_dir)
        assert first.proc.returncode == 0, first.log()
        feed_ids = run_until_caught_up(replay, state_dir, second)
        assert second.stop() == 0, second.log()
    finally:
        for component in (first, second, replay.component):
            if component is not None:
                component.stop()
    ids = trade_ids(topic_messages(broker, topic, at_least=len(feed_ids)))
    assert sorted(ids) == feed_ids  # all of them, none twice
    recovered = filled(second.log())
    print(f"SIGTERM: {len(feed_ids)} trades, {recovered} recovered over REST after id {resume_from}")
    assert recovered >= RATE * DOWN_S * 0.5
    assert "resuming from the state file" in second.log()
    assert "caught up" in second.log() or "catching up" in second.log()


def test_sigkill_then_restart_loses_nothing_and_the_database_has_each_trade_once(
    broker: Broker, topic: str, pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, logdir: Path,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    replay = start_replay(["--synthetic", SYMBOL, "--rate", str(RATE), "--seed", "12"], logdir)
    env = {**pipeline_env, **producer_env(broker, topic, replay, state_dir)}
    consumer_env = {**pipeline_env, "CANDLESTACK_SYMBOLS": SYMBOL.lower()}
    consumer = start_component("consumer", ["consumer"], consumer_env, logdir)
    first = start_component("producer", ["producer"], env, logdir)
    second: Component | None = None
    try:
        second, resume_from = restart_after(first, signal.SIGKILL, replay, env, logdir, state_dir)
        assert first.proc.returncode == -signal.SIGKILL
        feed_ids = run_until_caught_up(replay, state_dir, second)
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == len(feed_ids), timeout=60,
                 what=f"every trade stored ({consumer.log_path})")
        assert second.stop() == 0, second.log()
        assert consumer.stop() == 0, consumer.log()
    finally:
        for component in (first, second, consumer, replay.component):
            if component is not None:
                component.stop()
    assert stored_ids(conn, SYMBOL) == feed_ids
    ids = trade_ids(topic_messages(broker, topic, at_least=len(feed_ids)))
    assert set(ids) == set(feed_ids)
    twice = sum(n - 1 for n in Counter(ids).values())
    print(f"SIGKILL: {len(feed_ids)} trades, {filled(second.log())} recovered over REST after id {resume_from}, "
          f"{twice} on the topic twice (acknowledged after the last save)")
    assert scalar(conn, "SELECT count(*) FROM ingest_gaps") == 0


def test_429_with_retry_after_during_catch_up_is_waited_out_then_filled(
    broker: Broker, topic: str, logdir: Path, tmp_path: Path,
) -> None:
    retry_after = 3
    state_dir = tmp_path / "state"
    replay = start_replay(["--synthetic", SYMBOL, "--rate", str(RATE), "--seed", "13"], logdir)
    env = producer_env(broker, topic, replay, state_dir)
    first = start_component("producer", ["producer"], env, logdir)
    second: Component | None = None
    try:
        second, answer = restart_with_rest_fault(first, replay, env, logdir, state_dir,
                                                 f"mode=429&count=2&retry_after={retry_after}")
        assert answer["mode"] == "429"
        feed_ids = run_until_caught_up(replay, state_dir, second)
        assert second.stop() == 0, second.log()
        rest_log = replay_get(replay, "rest-log")
    finally:
        for component in (first, second, replay.component):
            if component is not None:
                component.stop()
    messages = topic_messages(broker, topic, at_least=len(feed_ids))
    assert sorted(trade_ids(messages)) == feed_ids
    gaps = [m for m in messages if isinstance(m, Gap)]
    assert gaps and all(gap.pending for gap in gaps), gaps  # announced as pending, never given up
    waits = [(after["t"] - before["t"]) / 1000 for before, after in itertools.pairwise(rest_log)
             if before["status"] == 429]
    print(f"429 Retry-After {retry_after} s: the next requests came after {waits} s; "
          f"{filled(second.log())} trades recovered")
    assert len(waits) == 2 and min(waits) >= retry_after - 0.05
    assert "gap pending" in second.log()
    assert filled(second.log()) >= RATE * DOWN_S * 0.5


def replay_post(replay: Replay, action: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{replay.rest_url}/_replay/{action}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.load(response))


def replay_get(replay: Replay, action: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{replay.rest_url}/_replay/{action}", timeout=5) as response:
        return list(json.load(response))


def test_truncated_rest_answers_during_catch_up_are_retried_not_recorded(
    broker: Broker, topic: str, logdir: Path, tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    replay = start_replay(["--synthetic", SYMBOL, "--rate", str(RATE), "--seed", "14"], logdir)
    env = producer_env(broker, topic, replay, state_dir)
    first = start_component("producer", ["producer"], env, logdir)
    second: Component | None = None
    try:
        second, _ = restart_with_rest_fault(first, replay, env, logdir, state_dir, "mode=truncate&count=3")
        feed_ids = run_until_caught_up(replay, state_dir, second)
        assert second.stop() == 0, second.log()
        rest_log = replay_get(replay, "rest-log")
    finally:
        for component in (first, second, replay.component):
            if component is not None:
                component.stop()
    messages = topic_messages(broker, topic, at_least=len(feed_ids))
    assert sorted(trade_ids(messages)) == feed_ids
    assert [m for m in messages if isinstance(m, Gap)] == []
    assert [entry["fault"] for entry in rest_log].count("truncate") == 3
    assert filled(second.log()) >= RATE * DOWN_S * 0.5
