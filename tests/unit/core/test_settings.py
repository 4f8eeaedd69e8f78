"""Settings read from the environment fail early and name the bad variable."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from candlestack.core.errors import SettingsError
from candlestack.core.settings import AggregatorSettings, ConsumerSettings, ProducerSettings, read_env_file
from tests.harness.services import candlestack_command


def test_defaults_are_sane() -> None:
    settings = ProducerSettings.from_env({})
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.stream == "trade" and settings.ws_url == "wss://stream.binance.com:9443"
    assert settings.metrics.port == 9101
    aggregator = AggregatorSettings.from_env({"CANDLESTACK_PG_PASSWORD": "x"})
    assert aggregator.intervals == ("1m", "5m") and aggregator.spark_master == "local[2]"


@pytest.mark.parametrize(("environ", "variable"), [
    ({"CANDLESTACK_SYMBOLS": "btc-usdt"}, "CANDLESTACK_SYMBOLS"),
    ({"CANDLESTACK_SYMBOLS": " , "}, "CANDLESTACK_SYMBOLS"),
    ({"CANDLESTACK_STREAM": "kline"}, "CANDLESTACK_STREAM"),
    ({"CANDLESTACK_BINANCE_WS_URL": "http://stream.binance.com"}, "CANDLESTACK_BINANCE_WS_URL"),
    ({"CANDLESTACK_BINANCE_WS_URL": "wss://"}, "CANDLESTACK_BINANCE_WS_URL"),
    ({"CANDLESTACK_BINANCE_REST_URL": "https://api.binance.com:99999"}, "CANDLESTACK_BINANCE_REST_URL"),
    ({"CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CANDLESTACK_METRICS_PORT": "http"}, "CANDLESTACK_METRICS_PORT"),
    ({"CANDLESTACK_PRODUCER_RECONNECT_MAX_S": "-1"}, "CANDLESTACK_PRODUCER_RECONNECT_MAX_S"),
])
def test_bad_producer_settings(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        ProducerSettings.from_env(environ)
    assert error.value.variable == variable


def test_tcp_database_needs_a_password_but_a_socket_does_not() -> None:
    with pytest.raises(SettingsError) as error:
        ConsumerSettings.from_env({"CANDLESTACK_PG_HOST": "db.internal"})
    assert error.value.variable == "CANDLESTACK_PG_PASSWORD"
    assert ConsumerSettings.from_env({"CANDLESTACK_PG_HOST": "/run/postgresql"}).postgres.password is None


@pytest.mark.parametrize(("environ", "variable"), [
    ({"CANDLESTACK_INTERVALS": "1m,7m"}, "CANDLESTACK_INTERVALS"),
    ({"CANDLESTACK_SPARK_MASTER": "yarn"}, "CANDLESTACK_SPARK_MASTER"),
    ({"CANDLESTACK_SPARK_EXECUTOR_MEMORY": "lots"}, "CANDLESTACK_SPARK_EXECUTOR_MEMORY"),
    ({"CANDLESTACK_SPARK_CORES_MAX": "-1"}, "CANDLESTACK_SPARK_CORES_MAX"),
])
def test_bad_aggregator_settings(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        AggregatorSettings.from_env({"CANDLESTACK_PG_PASSWORD": "x", **environ})
    assert error.value.variable == variable


@pytest.mark.parametrize(("command", "environ", "variable"), [
    (["producer"], {"CANDLESTACK_SYMBOLS": "btc/usdt"}, "CANDLESTACK_SYMBOLS"),
    (["producer"], {"CANDLESTACK_BINANCE_WS_URL": "ftp://example"}, "CANDLESTACK_BINANCE_WS_URL"),
    (["consumer"], {"CANDLESTACK_PG_HOST": "127.0.0.1"}, "CANDLESTACK_PG_PASSWORD"),
    (["aggregator", "run"], {"CANDLESTACK_PG_HOST": "127.0.0.1"}, "CANDLESTACK_PG_PASSWORD"),
])
def test_components_refuse_to_start_with_a_clear_message(command: list[str], environ: dict[str, str],
                                                         variable: str) -> None:
    # PYTHONPATH passes on, so that a work tree's own code is what runs.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **environ}
    result = subprocess.run(candlestack_command(*command), env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 78, result.stderr
    assert f"configuration error: {variable}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_is_parsed_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "status.env"
    path.write_text('# {{ ansible_managed }}\n\nCANDLESTACK_PG_USER="candlestack_status"\n'
                    'CANDLESTACK_PG_PASSWORD="a\\"b\\\\c$(x)`y`"\nPLAIN=v=1\nSINGLE=\'q "r"\'\n')
    assert read_env_file(str(path)) == {"CANDLESTACK_PG_USER": "candlestack_status",
                                        "CANDLESTACK_PG_PASSWORD": 'a"b\\c$(x)`y`', "PLAIN": "v=1",
                                        "SINGLE": 'q "r"'}


def test_env_file_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('CANDLESTACK_PG_PASSWORD="s3cret"\nbroken\n'))
    with pytest.raises(SettingsError) as bad:
        read_env_file("-")
    assert (bad.value.variable, bad.value.reason) == ("standard input", "line 2 is not KEY=VALUE")
    monkeypatch.setattr("sys.stdin", io.StringIO('CANDLESTACK_PG_PASSWORD="s3cret"\n'))
    assert read_env_file("-") == {"CANDLESTACK_PG_PASSWORD": "s3cret"}


def test_env_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text("CANDLESTACK_PG_USER\n")
    with pytest.raises(SettingsError) as bad:
        read_env_file(str(path))
    assert (bad.value.variable, bad.value.reason) == (str(path), "line 1 is not KEY=VALUE")


def test_the_ca_certificate_reaches_libpq_and_the_jdbc_driver() -> None:
    environ = {"CANDLESTACK_PG_HOST": "db.internal", "CANDLESTACK_PG_PASSWORD": "pw",
               "CANDLESTACK_PG_SSLMODE": "verify-full", "CANDLESTACK_PG_SSLROOTCERT": "/etc/ssl/candlestack/ca.crt"}
    postgres = ConsumerSettings.from_env(environ).postgres
    assert postgres.connect_kwargs()["sslmode"] == "verify-full"
    assert postgres.connect_kwargs()["sslrootcert"] == "/etc/ssl/candlestack/ca.crt"
    assert postgres.jdbc_tls_properties() == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/candlestack/ca.crt"}
    unset = ConsumerSettings.from_env({"CANDLESTACK_PG_HOST": "db.internal", "CANDLESTACK_PG_PASSWORD": "pw"}).postgres
    assert "sslrootcert" not in unset.connect_kwargs()
    assert unset.jdbc_tls_properties() == {"sslmode": "prefer"}
