"""Typed settings for every component, read from environment variables in this one place.

systemd passes them through an ``EnvironmentFile`` (see the Ansible role ``candlestack``).
Every variable starts with ``CANDLESTACK_``; each reader states its default, and a bad value
raises :class:`SettingsError` naming the variable, so a unit fails at start with a clear line
in the journal instead of misbehaving later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args
from urllib.parse import urlsplit

from candlestack.contract import STREAMS, StreamType, normalise_symbol
from candlestack.errors import ContractError, SettingsError

PREFIX = "CANDLESTACK_"

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
    """Reads ``CANDLESTACK_*`` variables from a mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def unprefixed(self, name: str) -> str | None:
        """A variable set by the service manager rather than by us (e.g. systemd's ``STATE_DIRECTORY``)."""
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise SettingsError(PREFIX + name, "is required and not set")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(PREFIX + name, f"expected a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise SettingsError(PREFIX + name, f"{value} is outside {minimum}..{maximum or 'inf'}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(PREFIX + name, f"expected a number, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(PREFIX + name, f"{value} is below {minimum}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(PREFIX + name, f"expected true or false, got {raw!r}")

    def optional_port(self, name: str, default: int | None) -> int | None:
        """A TCP port; ``0`` or ``off`` means disabled (``None``)."""
        raw = self.raw(name)
        if raw is not None and raw.lower() in {"0", "off", "none", "disabled"}:
            return None
        if raw is None:
            return default
        return self.integer(name, 0, minimum=1, maximum=65535)

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(PREFIX + name, f"expected a {'/'.join(schemes)} URL with a host, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise SettingsError(PREFIX + name, f"bad port in {value!r}") from None
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise SettingsError(PREFIX + name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def read_env_file(path: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an environment file, as systemd's ``EnvironmentFile=`` reads them.

    Covers what the deployment writes: blank lines and ``#``/``;`` comments are skipped, and a
    value may be in double quotes (a backslash escapes the next character, as
    ``roles/systemd_service`` writes them) or single quotes. The file is parsed, never executed,
    so a password may hold any character.

    Raises:
        SettingsError: naming the file, when it cannot be read or a line is not ``KEY=VALUE``.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        hint = " (it is root's: run with sudo)" if isinstance(exc, PermissionError) else ""
        raise SettingsError(path, f"cannot read: {exc.strerror}{hint}") from None
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


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\(.)', r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    format: str = "text"

    @classmethod
    def from_env(cls, env: Env) -> LogSettings:
        return cls(
            level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            format=env.choice("LOG_FORMAT", "text", ("text", "json")),
        )


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    database: str = "candlestack"
    user: str = "candlestack"
    password: str | None = None
    sslmode: str = "prefer"
    application_name: str = "candlestack"

    @classmethod
    def from_env(cls, env: Env, *, application_name: str) -> PostgresSettings:
        host = env.text("PG_HOST", "localhost")
        password = env.raw("PG_PASSWORD")
        # A Unix socket directory may use peer authentication; a TCP connection never goes
        # without a password here (pg_hba uses scram-sha-256).
        if password is None and not host.startswith("/"):
            raise SettingsError(PREFIX + "PG_PASSWORD", f"is required to connect to {host} over TCP")
        return cls(
            host=host,
            port=env.integer("PG_PORT", 5432, minimum=1, maximum=65535),
            database=env.text("PG_DATABASE", "candlestack"),
            user=env.text("PG_USER", "candlestack"),
            password=password,
            sslmode=env.choice("PG_SSLMODE", "prefer", ("disable", "allow", "prefer", "require",
                                                        "verify-ca", "verify-full")),
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
        return kwargs

    def jdbc_url(self) -> str:
        host = "localhost" if self.host.startswith("/") else self.host
        return f"jdbc:postgresql://{host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    topic: str = "candlestack.trades"

    @classmethod
    def from_env(cls, env: Env) -> KafkaSettings:
        servers = env.text("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
        for server in servers.split(","):
            if not re.match(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$", server.strip()):
                raise SettingsError(PREFIX + "KAFKA_BOOTSTRAP_SERVERS",
                                    f"expected host:port[,host:port], got {servers!r}")
        topic = env.text("KAFKA_TOPIC", "candlestack.trades")
        if not re.match(r"^[A-Za-z0-9._\-]{1,249}$", topic):
            raise SettingsError(PREFIX + "KAFKA_TOPIC", f"not a valid topic name: {topic!r}")
        return cls(bootstrap_servers=servers, topic=topic)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = "127.0.0.1"
    port: int | None = None

    @classmethod
    def from_env(cls, env: Env, *, default_port: int | None) -> MetricsSettings:
        return cls(address=env.text("METRICS_ADDRESS", "127.0.0.1"),
                   port=env.optional_port("METRICS_PORT", default_port))


def parse_symbols(env: Env) -> tuple[str, ...]:
    raw = env.text("SYMBOLS", "btcusdt,ethusdt")
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
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    # Binance closes every connection after 24 h; reconnect on our own terms a little before.
    max_connection_age_s: float = 23.5 * 3600
    gap_fill_max_trades: int = 100_000
    buffer_max_messages: int = 100_000
    # Where the last acknowledged trade ids and the pending gaps survive a restart; None: nowhere.
    state_dir: Path | None = None
    # Binance allows 6000 request weight a minute per IP; stay below it with room for other clients.
    rest_weight_limit: int = 5000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProducerSettings:
        env = Env(environ)
        return cls(
            symbols=parse_symbols(env),
            stream=cast(StreamType, env.choice("STREAM", "trade", STREAMS)),
            ws_url=env.url("BINANCE_WS_URL", "wss://stream.binance.com:9443", schemes=("ws", "wss")),
            rest_url=env.url("BINANCE_REST_URL", "https://api.binance.com", schemes=("http", "https")),
            kafka=KafkaSettings.from_env(env),
            metrics=MetricsSettings.from_env(env, default_port=9101),
            log=LogSettings.from_env(env),
            reconnect_initial_s=env.number("PRODUCER_RECONNECT_INITIAL_S", 0.5, minimum=0.01),
            reconnect_max_s=env.number("PRODUCER_RECONNECT_MAX_S", 30.0, minimum=0.01),
            max_connection_age_s=env.number("PRODUCER_MAX_CONNECTION_AGE_S", 23.5 * 3600, minimum=1.0),
            gap_fill_max_trades=env.integer("PRODUCER_GAP_FILL_MAX_TRADES", 100_000),
            buffer_max_messages=env.integer("PRODUCER_BUFFER_MAX_MESSAGES", 100_000, minimum=1, maximum=10_000_000),
            state_dir=producer_state_dir(env),
            # One historicalTrades page costs 25: a smaller budget could never send a request.
            rest_weight_limit=env.integer("PRODUCER_REST_WEIGHT_LIMIT", 5000, minimum=25),
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
    group_id: str = "candlestack-consumer"
    batch_max_messages: int = 5000
    # How long a batch waits for more messages once the first has arrived.
    batch_linger_ms: int = 5
    retry_max_s: float = 30.0
    # The symbols whose trades are stored (the producer's list); None stores any symbol.
    symbols: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsumerSettings:
        env = Env(environ)
        # A message for another symbol is a misrouted or forged message: set aside unless the
        # operator says the topic carries more symbols than this host's producer streams.
        accept_any = env.flag("CONSUMER_ACCEPT_ANY_SYMBOL", False)
        return cls(
            symbols=None if accept_any else parse_symbols(env),
            kafka=KafkaSettings.from_env(env),
            postgres=PostgresSettings.from_env(env, application_name="candlestack-consumer"),
            metrics=MetricsSettings.from_env(env, default_port=9102),
            log=LogSettings.from_env(env),
            group_id=env.text("KAFKA_GROUP_ID", "candlestack-consumer"),
            batch_max_messages=env.integer("CONSUMER_BATCH_MAX_MESSAGES", 5000, minimum=1, maximum=1_000_000),
            batch_linger_ms=env.integer("CONSUMER_BATCH_LINGER_MS", 5, maximum=60_000),
            retry_max_s=env.number("CONSUMER_RETRY_MAX_S", 30.0, minimum=0.01),
        )


def parse_intervals(env: Env) -> tuple[str, ...]:
    raw = env.text("INTERVALS", "1m,5m")
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
    intervals: tuple[str, ...] = ("1m", "5m")
    spark_master: str = "local[2]"
    jdbc_jar: str = "/usr/share/java/postgresql.jar"
    driver_memory: str = "512m"
    executor_memory: str = "512m"
    executor_cores: int | None = None
    # spark.cores.max: how many cluster cores this application may hold. The long-running
    # aggregator caps itself so that a backfill can still get executors on a shared cluster.
    cores_max: int | None = None
    # The address executors use to reach this driver (client mode); None lets Spark guess.
    driver_host: str | None = None
    tick_s: float = 2.0
    # A run tick's Spark job is cancelled after this long and the session rebuilt: after a
    # master restart, jobs wait for executors that never come instead of failing.
    job_timeout_s: float = 60.0
    backfill_chunk_hours: int = 24
    read_partitions: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AggregatorSettings:
        env = Env(environ)
        master = env.text("SPARK_MASTER", "local[2]")
        if not re.match(r"^(local(\[(\d+|\*)\])?|spark://[A-Za-z0-9_.\-]+:\d+(,[A-Za-z0-9_.\-]+:\d+)*)$", master):
            raise SettingsError(PREFIX + "SPARK_MASTER", f"expected local[N] or spark://host:port, got {master!r}")
        memory_pattern = re.compile(r"^\d+[kmgt]$", re.IGNORECASE)
        memories = {name: env.text(name, "512m") for name in ("SPARK_DRIVER_MEMORY", "SPARK_EXECUTOR_MEMORY")}
        for name, value in memories.items():
            if not memory_pattern.match(value):
                raise SettingsError(PREFIX + name, f"expected a JVM size such as 512m or 2g, got {value!r}")
        cores = env.integer("SPARK_EXECUTOR_CORES", 0, maximum=1024)
        cores_max = env.integer("SPARK_CORES_MAX", 0, maximum=65536)
        return cls(
            postgres=PostgresSettings.from_env(env, application_name="candlestack-aggregator"),
            metrics=MetricsSettings.from_env(env, default_port=9103),
            log=LogSettings.from_env(env),
            intervals=parse_intervals(env),
            spark_master=master,
            jdbc_jar=env.text("JDBC_JAR", "/usr/share/java/postgresql.jar"),
            driver_memory=memories["SPARK_DRIVER_MEMORY"],
            executor_memory=memories["SPARK_EXECUTOR_MEMORY"],
            executor_cores=cores or None,
            cores_max=cores_max or None,
            driver_host=env.raw("SPARK_DRIVER_HOST"),
            tick_s=env.number("AGGREGATOR_TICK_S", 2.0, minimum=0.1),
            job_timeout_s=env.number("AGGREGATOR_JOB_TIMEOUT_S", 60.0, minimum=1.0),
            backfill_chunk_hours=env.integer("AGGREGATOR_BACKFILL_CHUNK_HOURS", 24, minimum=1, maximum=24 * 366),
            read_partitions=env.integer("AGGREGATOR_READ_PARTITIONS", 4, minimum=1, maximum=1024),
        )


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """For ``db migrate``, ``status`` and ``retention``: just the connection and logging."""

    postgres: PostgresSettings
    log: LogSettings
    retention_days: int = 30
    partitions_ahead_days: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        env = Env(environ)
        return cls(
            postgres=PostgresSettings.from_env(env, application_name="candlestack-admin"),
            log=LogSettings.from_env(env),
            retention_days=env.integer("RETENTION_DAYS", 30, minimum=1),
            partitions_ahead_days=env.integer("PARTITIONS_AHEAD_DAYS", 3, maximum=366),
        )


assert set(get_args(StreamType)) == set(STREAMS)
