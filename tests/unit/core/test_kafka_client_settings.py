"""The Kafka client settings: PLAINTEXT (Tansu) unchanged, SASL_SSL (Apache Kafka) with a SCRAM
user whose password comes from a file, never from the environment, into every client's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlestack.core.errors import SettingsError
from candlestack.core.settings import ConsumerSettings, Env, KafkaSettings, ProducerSettings
from consumer.main import consumer_config
from producer.publisher import producer_config

SECURED = {
    "CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": "192.168.56.21:9092,192.168.56.22:9092",
    "CANDLESTACK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "CANDLESTACK_KAFKA_SASL_USERNAME": "candlestack-producer",
    "CANDLESTACK_PG_PASSWORD": "x",
}
SECURITY_KEYS = {"security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location",
                 "ssl.endpoint.identification.algorithm"}


@pytest.fixture
def secured(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "password").write_text("s3cret-from-the-vault\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return SECURED | {"CANDLESTACK_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
                      "CANDLESTACK_KAFKA_SSL_CA_LOCATION": str(tmp_path / "ca.crt")}


def test_plaintext_by_default_adds_only_the_protocol() -> None:
    producer = producer_config(ProducerSettings.from_env({}).kafka, buffer_max_messages=10)
    consumer = consumer_config(ConsumerSettings.from_env({"CANDLESTACK_PG_PASSWORD": "x"}))
    for config in (producer, consumer):
        assert config["bootstrap.servers"] == "localhost:9092"
        assert config["security.protocol"] == "PLAINTEXT"
        assert not (set(config) & (SECURITY_KEYS - {"security.protocol"}))


def test_sasl_ssl_reaches_the_producer_and_the_consumer(secured: dict[str, str]) -> None:
    producer = producer_config(ProducerSettings.from_env(secured).kafka, buffer_max_messages=10)
    consumer = consumer_config(ConsumerSettings.from_env(secured))
    for config in (producer, consumer):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "candlestack-producer"
        # The file's first line, without its newline.
        assert config["sasl.password"] == "s3cret-from-the-vault"
        assert config["ssl.ca.location"] == secured["CANDLESTACK_KAFKA_SSL_CA_LOCATION"]
        assert config["ssl.endpoint.identification.algorithm"] == "https"
    # The idempotent producer keeps its own settings.
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"


def test_the_password_is_not_in_the_settings_repr(secured: dict[str, str]) -> None:
    settings = KafkaSettings.from_env(Env(secured))
    assert settings.sasl_password == "s3cret-from-the-vault"
    assert "s3cret" not in repr(settings)


def test_the_password_is_never_read_from_the_environment(secured: dict[str, str]) -> None:
    environ = {k: v for k, v in secured.items() if k != "CANDLESTACK_KAFKA_SASL_PASSWORD_FILE"}
    with pytest.raises(SettingsError) as error:
        ProducerSettings.from_env(environ | {"CANDLESTACK_KAFKA_SASL_PASSWORD": "in-the-environment"})
    assert error.value.variable == "CANDLESTACK_KAFKA_SASL_PASSWORD_FILE"


@pytest.mark.parametrize(("change", "variable"), [
    ({"CANDLESTACK_KAFKA_SECURITY_PROTOCOL": "SSL"}, "CANDLESTACK_KAFKA_SECURITY_PROTOCOL"),
    ({"CANDLESTACK_KAFKA_SASL_MECHANISM": "PLAIN"}, "CANDLESTACK_KAFKA_SASL_MECHANISM"),
    ({"CANDLESTACK_KAFKA_SASL_USERNAME": ""}, "CANDLESTACK_KAFKA_SASL_USERNAME"),
    ({"CANDLESTACK_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"}, "CANDLESTACK_KAFKA_SASL_PASSWORD_FILE"),
    ({"CANDLESTACK_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.crt"}, "CANDLESTACK_KAFKA_SSL_CA_LOCATION"),
])
def test_bad_security_settings_name_their_variable(secured: dict[str, str], change: dict[str, str],
                                                   variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        ConsumerSettings.from_env(secured | change)
    assert error.value.variable == variable


def test_an_empty_password_file_is_refused(secured: dict[str, str]) -> None:
    Path(secured["CANDLESTACK_KAFKA_SASL_PASSWORD_FILE"]).write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        ProducerSettings.from_env(secured)


def test_plaintext_ignores_the_sasl_settings(secured: dict[str, str]) -> None:
    """A Tansu deployment that still carries the variables does not need the file."""
    environ = secured | {"CANDLESTACK_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                         "CANDLESTACK_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"}
    config = ProducerSettings.from_env(environ).kafka.client_config()
    assert config == {"bootstrap.servers": SECURED["CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS"],
                      "security.protocol": "PLAINTEXT"}

