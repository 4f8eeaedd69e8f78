"""`candlestack db retention`: how many days it keeps, checked before the database is asked."""

from __future__ import annotations

import argparse
import re
from datetime import date
from typing import Any

import pytest

from candlestack import admin, cli
from candlestack.core import db
from candlestack.core.errors import SettingsError
from candlestack.core.setting_table import RETENTION_MIN_DAYS, SETTINGS
from candlestack.core.settings import DatabaseSettings

ENV = {"CANDLESTACK_PG_PASSWORD": "x"}


def parse(*words: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["db", "retention", *words])


def test_the_minimum_is_two_days_and_the_setting_uses_it() -> None:
    assert RETENTION_MIN_DAYS == 2
    assert SETTINGS["RETENTION_DAYS"].minimum == RETENTION_MIN_DAYS  # type: ignore[attr-defined]


def test_the_sql_function_refuses_below_the_same_minimum() -> None:
    """The newest migration that defines the function carries the number the CLI checks
    (tests/integration/test_retention_role.py proves the function acts on it)."""
    defining = [sql for _, _, sql in db.available_migrations() if "min_keep_days CONSTANT" in sql]
    assert defining, "no migration defines drop_trade_partitions_before's min_keep_days"
    found = re.search(r"min_keep_days CONSTANT integer := (\d+);", defining[-1])
    assert found is not None
    assert int(found.group(1)) == RETENTION_MIN_DAYS


@pytest.mark.parametrize("days", [str(RETENTION_MIN_DAYS), "30", "3650"])
def test_keep_days_at_or_above_the_minimum_is_accepted(days: str) -> None:
    assert parse("--keep-days", days).keep_days == int(days)


def test_without_keep_days_the_setting_decides() -> None:
    assert parse().keep_days is None


@pytest.mark.parametrize(("days", "message"), [
    ("1", "argument --keep-days: 1 is too few: at least 2 days are kept"),
    ("0", "argument --keep-days: 0 is too few: at least 2 days are kept"),
    ("-5", "argument --keep-days: -5 is too few: at least 2 days are kept"),
    ("1.5", "argument --keep-days: not a whole number of days: '1.5'"),
    ("", "argument --keep-days: not a whole number of days: ''"),
])
def test_keep_days_below_the_minimum_or_not_a_number_is_a_usage_error(
    days: str, message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(f"--keep-days={days}")
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("days", ["1", "0", "-1"])
def test_the_setting_below_the_minimum_is_a_configuration_error(days: str) -> None:
    with pytest.raises(SettingsError, match=rf"CANDLESTACK_RETENTION_DAYS: {days} is outside 2\.\.inf"):
        DatabaseSettings.from_env({**ENV, "CANDLESTACK_RETENTION_DAYS": days})
    assert DatabaseSettings.from_env({**ENV, "CANDLESTACK_RETENTION_DAYS": "2"}).retention_days == 2


class FakeCursor:
    """Records statements; the cutoff query answers with a fixed date, the function with no rows."""

    def __init__(self, executed: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.executed = executed
        self.row: tuple[Any, ...] | None = None

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        self.executed.append((sql, params))
        self.row = (date(2026, 11, 1),) if "now()" in sql else None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row

    def fetchall(self) -> list[tuple[Any, ...]]:
        return []


class FakeConnection:
    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.executed)

    def close(self) -> None:
        return None


@pytest.mark.parametrize(("keep_days", "setting", "used"), [(None, "45", 45), (2, "45", 2), (7, "30", 7)])
def test_keep_days_wins_over_the_setting_and_the_cutoff_comes_from_the_database(
    monkeypatch: pytest.MonkeyPatch, keep_days: int | None, setting: str, used: int,
) -> None:
    """No `or` fallback: an explicit value is used as given; the database computes the cutoff
    from its own clock and the function gets exactly that date."""
    conn = FakeConnection()
    monkeypatch.setattr(db, "connect", lambda settings: conn)
    settings = DatabaseSettings.from_env({**ENV, "CANDLESTACK_RETENTION_DAYS": setting})
    assert admin._db_action(argparse.Namespace(action="retention", keep_days=keep_days), settings) == 0
    (cutoff_sql, cutoff_params), (drop_sql, drop_params) = conn.executed
    assert "now() AT TIME ZONE 'UTC'" in cutoff_sql and cutoff_params == (used,)
    assert "drop_trade_partitions_before(%s)" in drop_sql and drop_params == (date(2026, 11, 1),)


def test_a_login_without_the_retention_role_is_told_which_it_needs() -> None:
    assert admin._NEEDS["retention"] == "a member of candlestack_prune"
