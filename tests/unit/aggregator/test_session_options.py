"""The driver's Spark options: authentication and encryption only with a secret file, fixed
ports, and the secret itself never among the options a JVM is launched with."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlestack.aggregator.session import NETWORK_CRYPTO, read_auth_secret, session_options
from candlestack.core.errors import SettingsError
from candlestack.core.settings import AggregatorSettings

BASE = {"CANDLESTACK_PG_PASSWORD": "x", "CANDLESTACK_SPARK_MASTER": "spark://10.0.0.1:7077"}


def test_without_a_secret_file_the_driver_neither_authenticates_nor_encrypts() -> None:
    options = session_options(AggregatorSettings.from_env(BASE), app_name="t")
    assert "spark.authenticate" not in options
    assert not set(NETWORK_CRYPTO) & set(options)
    assert (options["spark.driver.port"], options["spark.driver.blockManager.port"],
            options["spark.blockManager.port"]) == ("7079", "7080", "7090")


def test_with_a_secret_file_it_authenticates_with_aes_gcm_but_the_secret_is_no_launch_option(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-spark-secret\n")
    settings = AggregatorSettings.from_env({**BASE, "CANDLESTACK_SPARK_AUTH_SECRET_FILE": str(secret),
                                            "CANDLESTACK_SPARK_DRIVER_PORT": "0"})
    options = session_options(settings, app_name="t")
    assert options["spark.authenticate"] == "true"
    assert options["spark.network.crypto.enabled"] == "true"
    assert options["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert options["spark.network.crypto.saslFallback"] == "false"
    assert options["spark.driver.port"] == "0"
    assert "spark.authenticate.secret" not in options
    assert "a-long-enough-spark-secret" not in repr(options)
    assert read_auth_secret(str(secret)) == "a-long-enough-spark-secret"


def test_a_missing_or_empty_secret_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CANDLESTACK_SPARK_AUTH_SECRET_FILE: cannot read"):
        read_auth_secret(str(tmp_path / "absent"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        read_auth_secret(str(tmp_path / "empty"))
