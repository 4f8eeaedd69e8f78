"""Typed settings for every component, read from environment variables in this one place.

systemd passes them through an ``EnvironmentFile`` (see the Ansible role ``candlestack``).
Every variable starts with ``CANDLESTACK_`` and is described in
:mod:`candlestack.core.setting_table`, which gives each reader its default and bounds; a bad value
raises :class:`SettingsError` naming the variable, so a unit fails at start with a clear line
in the journal instead of misbehaving later.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from candlestack.core.contract import StreamType, normalise_symbol
from candlestack.core.errors import ContractError, SettingsError
from candlestack.core.setting_table import (
    PREFIX,
    Choice,
    Component,
    Flag,
    Integer,
    Number,
    Port,
    Setting,
    Text,
    Url,
    setting,
)

# Interval name -> length in ms. Every one of these divides a UTC day or is a day, so windows
# aligned to the Unix epoch are the windows Binance uses.
INTERVALS_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


class Env:
    """Reads ``CANDLESTACK_*`` variables from a mapping (``os.environ`` by default).

    Each reader takes the default and bounds from the variable's entry in
    :mod:`candlestack.core.setting_table`; a name that is not there raises ``LookupError``, and an
    entry of another kind ``TypeError`` (both are bugs, not configuration errors).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        """The value set (stripped), or None when unset or blank; the table's default is not applied."""
        setting(name, Setting)  # raises for a name outside the table
        value = self._environ.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def unprefixed(self, name: str) -> str | None:
        """A variable set by the service manager rather than by us (e.g. systemd's ``STATE_DIRECTORY``)."""
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str) -> str:
        default = setting(name, Text).default
        if default is None:
            raise TypeError(f"{PREFIX}{name} has no default: read it with optional_text()")
        return self.raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self.raw(name) or setting(name, Text).default

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise SettingsError(PREFIX + name, "is required and not set")
        return value

    def integer(self, name: str) -> int:
        entry = setting(name, Integer)
        raw = self.raw(name)
        if raw is None:
            return entry.default
        return _whole_number(name, raw, entry.minimum, entry.maximum)

    def number(self, name: str) -> float:
        entry = setting(name, Number)
        raw = self.raw(name)
        if raw is None:
            return entry.default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(PREFIX + name, f"expected a number, got {raw!r}") from None
        if value < entry.minimum:
            raise SettingsError(PREFIX + name, f"{value} is below {entry.minimum}")
        return value

    def flag(self, name: str) -> bool:
        entry = setting(name, Flag)
        raw = self.raw(name)
        if raw is None:
            return entry.default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(PREFIX + name, f"expected true or false, got {raw!r}")

    def optional_port(self, name: str, component: Component) -> int | None:
        """A TCP port, by default the component's; ``0`` or ``off`` means disabled (``None``)."""
        entry = setting(name, Port)
        raw = self.raw(name)
        if raw is None:
            return entry.default_for(component)
        if raw.lower() in entry.disabled:
            return None
        return _whole_number(name, raw, entry.minimum, entry.maximum)

    def url(self, name: str) -> str:
        entry = setting(name, Url)
        value = (self.raw(name) or entry.default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in entry.schemes or not parts.hostname:
            raise SettingsError(PREFIX + name,
                                f"expected a {'/'.join(entry.schemes)} URL with a host, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise SettingsError(PREFIX + name, f"bad port in {value!r}") from None
        return value

    def choice(self, name: str) -> str:
        entry = setting(name, Choice)
        value = self.raw(name) or entry.default
        if value not in entry.choices:
            raise SettingsError(PREFIX + name, f"expected one of {', '.join(entry.choices)}, got {value!r}")
        return value


# An empty environment: what it reads is each setting's default. The dataclasses take their
# defaults from it, for code that constructs them directly (tests, benchmarks).
DEFAULTS = Env({})


def _whole_number(name: str, raw: str, minimum: int, maximum: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(PREFIX + name, f"expected a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise SettingsError(PREFIX + name, f"{value} is outside {minimum}..{maximum or 'inf'}")
    return value


def read_env_file(path: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an environment file (``-``: standard input), as systemd's
    ``EnvironmentFile=`` reads them.

    Covers what the deployment writes: blank lines and ``#``/``;`` comments are skipped, and a
    value may be in double quotes (a backslash escapes the next character, as
    ``roles/systemd_service`` writes them) or single quotes. The file is parsed, never executed,
    so a password may hold any character.

    Raises:
        SettingsError: naming the file, when it cannot be read or a line is not ``KEY=VALUE``.
    """
    if path == "-":
        # Standard input: a deployment tool hands the credential over without writing it to
        # disk or putting it in a process's arguments or environment.
        lines = sys.stdin.read().splitlines()
        path = "standard input"
    else:
        lines = _read_lines(path)
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        key, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise SettingsError(path, f"line {number} is not KEY=VALUE")
        values[key.strip()] = _unquote(value.strip())
    return values


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().splitlines()
    except OSError as exc:
        hint = " (it is root's: run with sudo)" if isinstance(exc, PermissionError) else ""
        raise SettingsError(path, f"cannot read: {exc.strerror}{hint}") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\(.)', r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = DEFAULTS.choice("LOG_LEVEL")
    format: str = DEFAULTS.choice("LOG_FORMAT")

    @classmethod
    def from_env(cls, env: Env) -> LogSettings:
        return cls(level=env.choice("LOG_LEVEL"), format=env.choice("LOG_FORMAT"))


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    host: str = DEFAULTS.text("PG_HOST")
    port: int = DEFAULTS.integer("PG_PORT")
    database: str = DEFAULTS.text("PG_DATABASE")
    user: str = DEFAULTS.text("PG_USER")
    password: str | None = DEFAULTS.optional_text("PG_PASSWORD")
    sslmode: str = DEFAULTS.choice("PG_SSLMODE")
    sslrootcert: str | None = DEFAULTS.optional_text("PG_SSLROOTCERT")
    # Not a setting: each component names itself (from_env's argument).
    application_name: str = "candlestack"

    @classmethod
    def from_env(cls, env: Env, *, application_name: str) -> PostgresSettings:
        host = env.text("PG_HOST")
        password = env.optional_text("PG_PASSWORD")
        # A Unix socket directory may use peer authentication; a TCP connection never goes
        # without a password here (pg_hba uses scram-sha-256).
        if password is None and not host.startswith("/"):
            raise SettingsError(PREFIX + "PG_PASSWORD", f"is required to connect to {host} over TCP")
        return cls(
            host=host,
            port=env.integer("PG_PORT"),
            database=env.text("PG_DATABASE"),
            user=env.text("PG_USER"),
            password=password,
            sslmode=env.choice("PG_SSLMODE"),
            sslrootcert=env.optional_text("PG_SSLROOTCERT"),
            application_name=application_name,
        )

    def connect_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "application_name": self.application_name,
            "connect_timeout": 10,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert is not None:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def jdbc_tls_properties(self) -> dict[str, str]:
        """The same TLS checks for the JDBC driver (its property names are libpq's)."""
        properties = {"sslmode": self.sslmode}
        if self.sslrootcert is not None:
            properties["sslrootcert"] = self.sslrootcert
        return properties

    def jdbc_url(self) -> str:
        host = "localhost" if self.host.startswith("/") else self.host
        return f"jdbc:postgresql://{host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = DEFAULTS.text("KAFKA_BOOTSTRAP_SERVERS")
    topic: str = DEFAULTS.text("KAFKA_TOPIC")
    security_protocol: str = DEFAULTS.choice("KAFKA_SECURITY_PROTOCOL")
    sasl_mechanism: str = DEFAULTS.choice("KAFKA_SASL_MECHANISM")
    sasl_username: str | None = DEFAULTS.optional_text("KAFKA_SASL_USERNAME")
    # Read from CANDLESTACK_KAFKA_SASL_PASSWORD_FILE at start; never from the environment.
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = DEFAULTS.optional_text("KAFKA_SSL_CA_LOCATION")

    @classmethod
    def from_env(cls, env: Env) -> KafkaSettings:
        servers = env.text("KAFKA_BOOTSTRAP_SERVERS")
        for server in servers.split(","):
            if not re.match(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$", server.strip()):
                raise SettingsError(PREFIX + "KAFKA_BOOTSTRAP_SERVERS",
                                    f"expected host:port[,host:port], got {servers!r}")
        topic = env.text("KAFKA_TOPIC")
        if not re.match(r"^[A-Za-z0-9._\-]{1,249}$", topic):
            raise SettingsError(PREFIX + "KAFKA_TOPIC", f"not a valid topic name: {topic!r}")
        protocol = env.choice("KAFKA_SECURITY_PROTOCOL")
        mechanism = env.choice("KAFKA_SASL_MECHANISM")
        username = env.optional_text("KAFKA_SASL_USERNAME")
        password_file = env.optional_text("KAFKA_SASL_PASSWORD_FILE")
        ca_location = env.optional_text("KAFKA_SSL_CA_LOCATION")
        password = None
        if protocol == "SASL_SSL":
            if username is None:
                raise SettingsError(PREFIX + "KAFKA_SASL_USERNAME", "is required with SASL_SSL")
            if password_file is None:
                raise SettingsError(PREFIX + "KAFKA_SASL_PASSWORD_FILE", "is required with SASL_SSL")
            password = _read_secret_file(PREFIX + "KAFKA_SASL_PASSWORD_FILE", password_file)
            if ca_location is not None and not os.path.isfile(ca_location):
                raise SettingsError(PREFIX + "KAFKA_SSL_CA_LOCATION", f"{ca_location} is not a file")
        return cls(bootstrap_servers=servers, topic=topic, security_protocol=protocol, sasl_mechanism=mechanism,
                   sasl_username=username, sasl_password=password, ssl_ca_location=ca_location)

    def client_config(self) -> dict[str, str]:
        """The librdkafka (confluent-kafka) settings every client of the brokers needs."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.security_protocol == "SASL_SSL":
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username or "",
                "sasl.password": self.sasl_password or "",
                # The brokers' certificates name their addresses (roles/pki): check them.
                "ssl.endpoint.identification.algorithm": "https",
            }
            if self.ssl_ca_location is not None:
                config["ssl.ca.location"] = self.ssl_ca_location
        return config


def _read_secret_file(variable: str, path: str) -> str:
    """The first line of a secret file (a trailing newline is not part of the secret)."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise SettingsError(variable, f"{path} is empty")
    return lines[0]


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = DEFAULTS.text("METRICS_ADDRESS")
    # No endpoint when constructed directly; from_env applies the component's default port.
    port: int | None = None

    @classmethod
    def from_env(cls, env: Env, *, component: Component) -> MetricsSettings:
        return cls(address=env.text("METRICS_ADDRESS"), port=env.optional_port("METRICS_PORT", component))


def parse_symbols(env: Env) -> tuple[str, ...]:
    raw = env.text("SYMBOLS")
    try:
        symbols = tuple(dict.fromkeys(normalise_symbol(s) for s in raw.split(",") if s.strip()))
    except ContractError as exc:
        raise SettingsError(PREFIX + "SYMBOLS", exc.reason) from None
    if not symbols:
        raise SettingsError(PREFIX + "SYMBOLS", "lists no symbol")
    # Binance allows 1024 streams per connection.
    if len(symbols) > 1024:
        raise SettingsError(PREFIX + "SYMBOLS", f"{len(symbols)} symbols; one connection carries at most 1024")
    return symbols


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    symbols: tuple[str, ...]
    stream: StreamType
    ws_url: str
    rest_url: str
    kafka: KafkaSettings
    metrics: MetricsSettings
    log: LogSettings
    reconnect_initial_s: float = DEFAULTS.number("PRODUCER_RECONNECT_INITIAL_S")
    reconnect_max_s: float = DEFAULTS.number("PRODUCER_RECONNECT_MAX_S")
    # Binance closes every connection after 24 h; reconnect on our own terms a little before.
    max_connection_age_s: float = DEFAULTS.number("PRODUCER_MAX_CONNECTION_AGE_S")
    gap_fill_max_trades: int = DEFAULTS.integer("PRODUCER_GAP_FILL_MAX_TRADES")
    buffer_max_messages: int = DEFAULTS.integer("PRODUCER_BUFFER_MAX_MESSAGES")
    # Where the last acknowledged trade ids and the pending gaps survive a restart; None: nowhere
    # (from_env falls back to systemd's $STATE_DIRECTORY).
    state_dir: Path | None = None
    # Binance allows 6000 request weight a minute per IP; stay below it with room for other clients.
    rest_weight_limit: int = DEFAULTS.integer("PRODUCER_REST_WEIGHT_LIMIT")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProducerSettings:
        env = Env(environ)
        return cls(
            symbols=parse_symbols(env),
            stream=cast(StreamType, env.choice("STREAM")),
            ws_url=env.url("BINANCE_WS_URL"),
            rest_url=env.url("BINANCE_REST_URL"),
            kafka=KafkaSettings.from_env(env),
            metrics=MetricsSettings.from_env(env, component="producer"),
            log=LogSettings.from_env(env),
            reconnect_initial_s=env.number("PRODUCER_RECONNECT_INITIAL_S"),
            reconnect_max_s=env.number("PRODUCER_RECONNECT_MAX_S"),
            max_connection_age_s=env.number("PRODUCER_MAX_CONNECTION_AGE_S"),
            gap_fill_max_trades=env.integer("PRODUCER_GAP_FILL_MAX_TRADES"),
            buffer_max_messages=env.integer("PRODUCER_BUFFER_MAX_MESSAGES"),
            state_dir=producer_state_dir(env),
            rest_weight_limit=env.integer("PRODUCER_REST_WEIGHT_LIMIT"),
        )


def producer_state_dir(env: Env) -> Path | None:
    """``CANDLESTACK_PRODUCER_STATE_DIR``, else the unit's ``StateDirectory=`` (systemd's
    ``$STATE_DIRECTORY``, colon-separated when a unit has several: the first), else None.

    An explicit ``off`` disables the state file even under systemd.
    """
    raw = env.raw("PRODUCER_STATE_DIR")
    if raw is not None and raw.lower() in {"off", "none", "disabled"}:
        return None
    if raw is None:
        systemd = env.unprefixed("STATE_DIRECTORY")
        raw = systemd.split(":")[0] if systemd else None
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_absolute():
        raise SettingsError(PREFIX + "PRODUCER_STATE_DIR", f"expected an absolute directory, got {raw!r}")
    return path


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    kafka: KafkaSettings
    postgres: PostgresSettings
    metrics: MetricsSettings
    log: LogSettings
    group_id: str = DEFAULTS.text("KAFKA_GROUP_ID")
    batch_max_messages: int = DEFAULTS.integer("CONSUMER_BATCH_MAX_MESSAGES")
    # How long a batch waits for more messages once the first has arrived.
    batch_linger_ms: int = DEFAULTS.integer("CONSUMER_BATCH_LINGER_MS")
    retry_max_s: float = DEFAULTS.number("CONSUMER_RETRY_MAX_S")
    # The symbols whose trades are stored (the producer's list); None stores any symbol.
    symbols: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsumerSettings:
        env = Env(environ)
        # A message for another symbol is a misrouted or forged message: set aside unless the
        # operator says the topic carries more symbols than this host's producer streams.
        accept_any = env.flag("CONSUMER_ACCEPT_ANY_SYMBOL")
        return cls(
            symbols=None if accept_any else parse_symbols(env),
            kafka=KafkaSettings.from_env(env),
            postgres=PostgresSettings.from_env(env, application_name="candlestack-consumer"),
            metrics=MetricsSettings.from_env(env, component="consumer"),
            log=LogSettings.from_env(env),
            group_id=env.text("KAFKA_GROUP_ID"),
            batch_max_messages=env.integer("CONSUMER_BATCH_MAX_MESSAGES"),
            batch_linger_ms=env.integer("CONSUMER_BATCH_LINGER_MS"),
            retry_max_s=env.number("CONSUMER_RETRY_MAX_S"),
        )


def parse_intervals(env: Env) -> tuple[str, ...]:
    raw = env.text("INTERVALS")
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [name for name in names if name not in INTERVALS_MS]
    if bad or not names:
        raise SettingsError(PREFIX + "INTERVALS",
                            f"unknown interval(s) {bad or raw!r}; valid: {', '.join(INTERVALS_MS)}")
    return tuple(sorted(names, key=INTERVALS_MS.__getitem__))


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    postgres: PostgresSettings
    metrics: MetricsSettings
    log: LogSettings
    intervals: tuple[str, ...] = parse_intervals(DEFAULTS)
    spark_master: str = DEFAULTS.text("SPARK_MASTER")
    jdbc_jar: str = DEFAULTS.text("JDBC_JAR")
    driver_memory: str = DEFAULTS.text("SPARK_DRIVER_MEMORY")
    executor_memory: str = DEFAULTS.text("SPARK_EXECUTOR_MEMORY")
    # None (the setting's 0): Spark's default.
    executor_cores: int | None = DEFAULTS.integer("SPARK_EXECUTOR_CORES") or None
    # spark.cores.max: how many cluster cores this application may hold. The long-running
    # aggregator caps itself so that a backfill can still get executors on a shared cluster.
    cores_max: int | None = DEFAULTS.integer("SPARK_CORES_MAX") or None
    # The address executors use to reach this driver (client mode); None lets Spark guess.
    driver_host: str | None = DEFAULTS.optional_text("SPARK_DRIVER_HOST")
    # A file with the cluster's shared secret; None: no authentication, no encryption.
    auth_secret_file: str | None = DEFAULTS.optional_text("SPARK_AUTH_SECRET_FILE")
    # 0: Spark picks a random port.
    driver_port: int = DEFAULTS.integer("SPARK_DRIVER_PORT")
    driver_block_manager_port: int = DEFAULTS.integer("SPARK_DRIVER_BLOCK_MANAGER_PORT")
    block_manager_port: int = DEFAULTS.integer("SPARK_BLOCK_MANAGER_PORT")
    tick_s: float = DEFAULTS.number("AGGREGATOR_TICK_S")
    open_refresh_s: float = DEFAULTS.number("AGGREGATOR_OPEN_REFRESH_S")
    # A run tick's Spark job is cancelled after this long and the session rebuilt: after a
    # master restart, jobs wait for executors that never come instead of failing.
    job_timeout_s: float = DEFAULTS.number("AGGREGATOR_JOB_TIMEOUT_S")
    backfill_chunk_hours: int = DEFAULTS.integer("AGGREGATOR_BACKFILL_CHUNK_HOURS")
    backfill_chunk_trades: int = DEFAULTS.integer("AGGREGATOR_BACKFILL_CHUNK_TRADES")
    read_partitions: int = DEFAULTS.integer("AGGREGATOR_READ_PARTITIONS")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AggregatorSettings:
        env = Env(environ)
        master = env.text("SPARK_MASTER")
        if not re.match(r"^(local(\[(\d+|\*)\])?|spark://[A-Za-z0-9_.\-]+:\d+(,[A-Za-z0-9_.\-]+:\d+)*)$", master):
            raise SettingsError(PREFIX + "SPARK_MASTER", f"expected local[N] or spark://host:port, got {master!r}")
        memory_pattern = re.compile(r"^\d+[kmgt]$", re.IGNORECASE)
        memories = {name: env.text(name) for name in ("SPARK_DRIVER_MEMORY", "SPARK_EXECUTOR_MEMORY")}
        for name, value in memories.items():
            if not memory_pattern.match(value):
                raise SettingsError(PREFIX + name, f"expected a JVM size such as 512m or 2g, got {value!r}")
        cores = env.integer("SPARK_EXECUTOR_CORES")
        cores_max = env.integer("SPARK_CORES_MAX")
        return cls(
            postgres=PostgresSettings.from_env(env, application_name="candlestack-aggregator"),
            metrics=MetricsSettings.from_env(env, component="aggregator"),
            log=LogSettings.from_env(env),
            intervals=parse_intervals(env),
            spark_master=master,
            jdbc_jar=env.text("JDBC_JAR"),
            driver_memory=memories["SPARK_DRIVER_MEMORY"],
            executor_memory=memories["SPARK_EXECUTOR_MEMORY"],
            executor_cores=cores or None,
            cores_max=cores_max or None,
            driver_host=env.optional_text("SPARK_DRIVER_HOST"),
            auth_secret_file=env.optional_text("SPARK_AUTH_SECRET_FILE"),
            driver_port=env.integer("SPARK_DRIVER_PORT"),
            driver_block_manager_port=env.integer("SPARK_DRIVER_BLOCK_MANAGER_PORT"),
            block_manager_port=env.integer("SPARK_BLOCK_MANAGER_PORT"),
            tick_s=env.number("AGGREGATOR_TICK_S"),
            open_refresh_s=env.number("AGGREGATOR_OPEN_REFRESH_S"),
            job_timeout_s=env.number("AGGREGATOR_JOB_TIMEOUT_S"),
            backfill_chunk_hours=env.integer("AGGREGATOR_BACKFILL_CHUNK_HOURS"),
            backfill_chunk_trades=env.integer("AGGREGATOR_BACKFILL_CHUNK_TRADES"),
            read_partitions=env.integer("AGGREGATOR_READ_PARTITIONS"),
        )


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """For ``db migrate``, ``status`` and ``retention``: just the connection and logging."""

    postgres: PostgresSettings
    log: LogSettings
    retention_days: int = DEFAULTS.integer("RETENTION_DAYS")
    partitions_ahead_days: int = DEFAULTS.integer("PARTITIONS_AHEAD_DAYS")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        env = Env(environ)
        return cls(
            postgres=PostgresSettings.from_env(env, application_name="candlestack-admin"),
            log=LogSettings.from_env(env),
            retention_days=env.integer("RETENTION_DAYS"),
            partitions_ahead_days=env.integer("PARTITIONS_AHEAD_DAYS"),
        )



@dataclass(frozen=True, slots=True)
class AuditSettings:
    """For ``audit``: which candles to compare with Binance's klines, where to ask, how much."""

    postgres: PostgresSettings
    log: LogSettings
    symbols: tuple[str, ...]
    intervals: tuple[str, ...]
    rest_url: str
    lookback_minutes: int = DEFAULTS.integer("AUDIT_LOOKBACK_MINUTES")
    settle_s: float = DEFAULTS.number("AUDIT_SETTLE_S")
    rest_weight_limit: int = DEFAULTS.integer("AUDIT_REST_WEIGHT_LIMIT")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuditSettings:
        env = Env(environ)
        return cls(
            postgres=PostgresSettings.from_env(env, application_name="candlestack-audit"),
            log=LogSettings.from_env(env),
            symbols=parse_symbols(env),
            intervals=parse_intervals(env),
            rest_url=env.url("BINANCE_REST_URL"),
            lookback_minutes=env.integer("AUDIT_LOOKBACK_MINUTES"),
            settle_s=env.number("AUDIT_SETTLE_S"),
            rest_weight_limit=env.integer("AUDIT_REST_WEIGHT_LIMIT"),
        )
