"""The table of every ``CANDLESTACK_*`` setting: its kind, default, bounds, meaning, the
components that read it and the Ansible role variables that set it.

This is the one place a setting is described. :mod:`candlestack.core.settings` takes every default
and bound from here, and reading a name that is not here raises, so the table cannot miss a
variable the code reads. The README's settings table is generated from it
(``python -m candlestack.core.setting_table --update README.md``), and ``tests/unit/core/test_settings_table.py``
checks the README and the role ``candlestack`` (defaults, environment files, argument specs,
role README) against it.

What a value may look like beyond a kind's bounds (symbols, intervals, Kafka servers, the Spark
master, JVM sizes, the PostgreSQL password rule) is checked by the readers in settings.py; the
entry says it in ``form`` for the documentation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Literal, TypeVar

from candlestack.core.contract import STREAMS

PREFIX = "CANDLESTACK_"

Component = Literal["producer", "consumer", "aggregator", "admin", "replay", "audit"]
# admin: `candlestack db migrate|retention|partitions` and `candlestack status`; audit: `candlestack audit`.
COMPONENTS: tuple[Component, ...] = ("producer", "consumer", "aggregator", "admin", "replay", "audit")
ALL: tuple[Component, ...] = COMPONENTS
DATABASE_USERS: tuple[Component, ...] = ("consumer", "aggregator", "admin", "audit")
STREAMING: tuple[Component, ...] = ("producer", "consumer")
WITH_METRICS: tuple[Component, ...] = ("producer", "consumer", "aggregator")

Scalar = str | int | float | bool

# The fewest days `db retention` keeps. drop_trade_partitions_before (migration 0007) refuses a
# younger cutoff with its own copy of this number; tests check that the two agree.
RETENTION_MIN_DAYS = 2

# The role's database logins, one per job (candlestack_pg_<login>_user and _password).
PG_LOGINS = ("owner", "consumer", "aggregator", "retention", "status")


@dataclass(frozen=True, slots=True)
class RoleVariable:
    """A variable of the Ansible role ``candlestack`` that writes a setting into environment files."""

    name: str
    # For a setting whose default depends on the component: whose default this variable carries.
    component: Component | None = None
    # Set when the role's default deliberately differs from the application's: why, and the
    # role's default (None when it is a Jinja expression over the inventory).
    differs_because: str = ""
    role_default: Scalar | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One ``CANDLESTACK_<name>`` variable. Subclasses are the kinds, each with its reader in
    :class:`candlestack.core.settings.Env`.

    ``role`` lists the role variables that set it; a setting the role does not expose says why
    in ``not_in_role_because`` instead.
    """

    name: str
    help: str
    used_by: tuple[Component, ...]
    default: Scalar | None
    role: tuple[RoleVariable, ...] = ()
    not_in_role_because: str = ""

    # The `type` its role variables may have in the role's meta/argument_specs.yml.
    role_types: ClassVar[tuple[str, ...]] = ("str",)

    @property
    def variable(self) -> str:
        return PREFIX + self.name

    def default_for(self, component: Component | None = None) -> Scalar | None:
        """The value ``component`` uses when the variable is unset (None: no value); the same for
        every component unless the kind says otherwise."""
        return self.default

    def accepts(self) -> str:
        """What a value may be, in a few words of Markdown."""
        return "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class Text(Setting):
    default: str | None
    # What a value must look like when not any text (its reader in settings.py checks it).
    form: str = ""

    role_types: ClassVar[tuple[str, ...]] = ("str", "path")

    def accepts(self) -> str:
        return self.form or "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing(Text):
    """Comma-separated items in the environment; a YAML list in the role."""

    role_types: ClassVar[tuple[str, ...]] = ("list",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Integer(Setting):
    default: int
    minimum: int = 0
    maximum: int | None = None

    role_types: ClassVar[tuple[str, ...]] = ("int",)

    def accepts(self) -> str:
        if self.maximum is None:
            return f"whole number, {self.minimum} or more"
        return f"whole number, {self.minimum}..{self.maximum}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Number(Setting):
    default: float
    minimum: float = 0.0

    role_types: ClassVar[tuple[str, ...]] = ("float",)

    def accepts(self) -> str:
        return f"number, {self.minimum:g} or more"


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag(Setting):
    default: bool

    role_types: ClassVar[tuple[str, ...]] = ("bool",)

    def accepts(self) -> str:
        return "`true` or `false` (or `1`/`0`, `yes`/`no`, `on`/`off`)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice(Setting):
    default: str
    choices: tuple[str, ...]

    def accepts(self) -> str:
        return ", ".join(f"`{choice}`" for choice in self.choices)


@dataclass(frozen=True, slots=True, kw_only=True)
class Url(Setting):
    default: str
    schemes: tuple[str, ...]

    def accepts(self) -> str:
        return " or ".join(f"`{scheme}://`" for scheme in self.schemes) + " URL with a host"


@dataclass(frozen=True, slots=True, kw_only=True)
class Port(Setting):
    """A TCP port that may be turned off, with a default per component."""

    default: None = None
    defaults_by_component: Mapping[Component, int] = field(hash=False)
    minimum: ClassVar[int] = 1
    maximum: ClassVar[int] = 65535
    disabled: ClassVar[tuple[str, ...]] = ("0", "off", "none", "disabled")

    role_types: ClassVar[tuple[str, ...]] = ("int",)

    def default_for(self, component: Component | None = None) -> int:
        if component is None or component not in self.defaults_by_component:
            raise LookupError(f"{self.variable} has no default for {component}")
        return self.defaults_by_component[component]

    def accepts(self) -> str:
        return f"port {self.minimum}..{self.maximum}; `0` or `off` disables"


TABLE: tuple[Setting, ...] = (
    Choice(name="LOG_LEVEL", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), used_by=ALL,
           help="least severity logged",
           role=(RoleVariable("candlestack_log_level"),)),
    Choice(name="LOG_FORMAT", default="text", choices=("text", "json"), used_by=ALL,
           help="`text` is key=value for journald, `json` one object a line",
           role=(RoleVariable("candlestack_log_format"),)),
    Text(name="METRICS_ADDRESS", default="127.0.0.1", form="listen address", used_by=WITH_METRICS,
         help="address of the Prometheus endpoint",
         role=(RoleVariable("candlestack_metrics_address",
                            differs_because="this host's private address when the inventory's monitoring host "
                                            "is another host, where Prometheus scrapes it"),)),
    Port(name="METRICS_PORT", defaults_by_component={"producer": 9101, "consumer": 9102, "aggregator": 9103},
         used_by=WITH_METRICS,
         help="port of the Prometheus endpoint; each component has its own default so that they share a host",
         role=(RoleVariable("candlestack_producer_metrics_port", component="producer"),
               RoleVariable("candlestack_consumer_metrics_port", component="consumer"),
               RoleVariable("candlestack_aggregator_metrics_port", component="aggregator"))),

    Listing(name="SYMBOLS", default="btcusdt,ethusdt", form="comma-separated Binance symbols, at most 1024",
            used_by=(*STREAMING, "audit"),
            help="what the producer streams; the audit compares these symbols' candles; the consumer sets trades "
                 "of other symbols aside as dead letters",
            role=(RoleVariable("candlestack_symbols"),)),
    Choice(name="STREAM", default="trade", choices=STREAMS, used_by=("producer",),
           help="Binance stream type; one database holds one stream type",
           role=(RoleVariable("candlestack_stream"),)),
    Url(name="BINANCE_WS_URL", default="wss://stream.binance.com:9443", schemes=("ws", "wss"), used_by=("producer",),
        help="Binance WebSocket (the role points it at the replay feed when that is enabled)",
        role=(RoleVariable("candlestack_binance_ws_url"),)),
    Url(name="BINANCE_REST_URL", default="https://api.binance.com", schemes=("http", "https"),
        used_by=("producer", "audit"),
        help="Binance REST, for gap filling and the audit's klines (the role points it at the replay feed when "
             "that is enabled)",
        role=(RoleVariable("candlestack_binance_rest_url"),)),
    Number(name="PRODUCER_RECONNECT_INITIAL_S", default=0.5, minimum=0.01, used_by=("producer",),
           help="first reconnect delay; it doubles (jittered) up to `_RECONNECT_MAX_S`",
           role=(RoleVariable("candlestack_producer_reconnect_initial_s"),)),
    Number(name="PRODUCER_RECONNECT_MAX_S", default=30.0, minimum=0.01, used_by=("producer",),
           help="longest reconnect delay",
           role=(RoleVariable("candlestack_producer_reconnect_max_s"),)),
    Number(name="PRODUCER_MAX_CONNECTION_AGE_S", default=23.5 * 3600, minimum=1.0, used_by=("producer",),
           help="planned reconnect before Binance's 24 h cut-off",
           not_in_role_because="it follows Binance's connection limit, not the deployment "
                               "(candlestack_producer_extra_env can still set it)"),
    Integer(name="PRODUCER_GAP_FILL_MAX_TRADES", default=100_000, used_by=("producer",),
            help="larger gaps (and catch-ups after a restart) are recorded with their exact range, not fetched",
            role=(RoleVariable("candlestack_producer_gap_fill_max_trades"),)),
    Integer(name="PRODUCER_BUFFER_MAX_MESSAGES", default=100_000, minimum=1, maximum=10_000_000,
            used_by=("producer",),
            help="bound of the local Kafka queue",
            role=(RoleVariable("candlestack_producer_buffer_max_messages"),)),
    Text(name="PRODUCER_STATE_DIR", default=None, form="absolute directory, or `off`", used_by=("producer",),
         help="where `producer-state.json` keeps the last acknowledged id per symbol and the pending gaps, "
              "for resuming after a restart; unset: systemd's `$STATE_DIRECTORY`, else nowhere",
         not_in_role_because="the role sets it to the unit's StateDirectory= (/var/lib/candlestack-producer)"),
    # One historicalTrades page costs 25: a smaller budget could never send a request.
    Integer(name="PRODUCER_REST_WEIGHT_LIMIT", default=5000, minimum=25, used_by=("producer",),
            help="REST request weight a minute the producer allows itself (Binance: 6000 per IP; "
                 "a historicalTrades page costs 25, an aggTrades page 4)",
            role=(RoleVariable("candlestack_producer_rest_weight_limit"),)),

    Text(name="KAFKA_BOOTSTRAP_SERVERS", default="localhost:9092", form="`host:port[,host:port...]`",
         used_by=STREAMING,
         help="Kafka brokers",
         role=(RoleVariable("candlestack_kafka_bootstrap_servers",
                            differs_because="the brokers of the inventory's kafka group "
                                            "(localhost:9092 without one)"),)),
    Text(name="KAFKA_TOPIC", default="candlestack.trades", form="Kafka topic name", used_by=STREAMING,
         help="topic of the trades (the deployment creates it)",
         role=(RoleVariable("candlestack_kafka_topic"),)),
    Text(name="KAFKA_GROUP_ID", default="candlestack-consumer", used_by=("consumer",),
         help="consumer group",
         role=(RoleVariable("candlestack_kafka_group_id"),)),
    Choice(name="KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT", choices=("PLAINTEXT", "SASL_SSL"), used_by=STREAMING,
           help="how the clients reach the brokers: `SASL_SSL` (TLS, and a SCRAM user) for Apache Kafka as the "
                "kafka role deploys it; `PLAINTEXT` for Tansu, which has neither",
           role=(RoleVariable("candlestack_kafka_security_protocol",
                              differs_because="SASL_SSL when the inventory's kafka_flavour is apache, "
                                              "else PLAINTEXT"),)),
    Choice(name="KAFKA_SASL_MECHANISM", default="SCRAM-SHA-512", choices=("SCRAM-SHA-512", "SCRAM-SHA-256"),
           used_by=STREAMING,
           help="SASL mechanism with `SASL_SSL`",
           role=(RoleVariable("candlestack_kafka_sasl_mechanism"),)),
    Text(name="KAFKA_SASL_USERNAME", default=None, form="required with `SASL_SSL`", used_by=STREAMING,
         help="the component's SCRAM user",
         role=(RoleVariable("candlestack_kafka_producer_user", component="producer",
                            differs_because="one Kafka user per component (roles/kafka's kafka_users)",
                            role_default="candlestack-producer"),
               RoleVariable("candlestack_kafka_consumer_user", component="consumer",
                            differs_because="one Kafka user per component (roles/kafka's kafka_users)",
                            role_default="candlestack-consumer"))),
    Text(name="KAFKA_SASL_PASSWORD_FILE", default=None, form="path of a file; required with `SASL_SSL`",
         used_by=STREAMING,
         help="file holding the SCRAM user's password (its first line; never the password itself in the "
              "environment)",
         not_in_role_because="the role writes candlestack_kafka_producer_password or _consumer_password to "
                             "/etc/candlestack/kafka-<component>.password (0640, root and the component's group) "
                             "and sets this path"),
    Text(name="KAFKA_SSL_CA_LOCATION", default=None, form="path of a PEM file", used_by=STREAMING,
         help="CA certificate the brokers' certificates are checked against with `SASL_SSL`; unset: the "
              "system's CAs",
         role=(RoleVariable("candlestack_kafka_ssl_ca_location", role_default="/etc/ssl/candlestack/ca.crt",
                            differs_because="the deployment's CA, installed by roles/pki"),)),

    Flag(name="CONSUMER_ACCEPT_ANY_SYMBOL", default=False, used_by=("consumer",),
         help="store every well-formed symbol, not only `CANDLESTACK_SYMBOLS` (a topic shared by several producers)",
         role=(RoleVariable("candlestack_consumer_accept_any_symbol"),)),
    Integer(name="CONSUMER_BATCH_MAX_MESSAGES", default=5000, minimum=1, maximum=1_000_000, used_by=("consumer",),
            help="most messages written in one transaction",
            role=(RoleVariable("candlestack_consumer_batch_max_messages"),)),
    Integer(name="CONSUMER_BATCH_LINGER_MS", default=5, maximum=60_000, used_by=("consumer",),
            help="how long a batch waits for more messages once the first has arrived",
            role=(RoleVariable("candlestack_consumer_batch_linger_ms"),)),
    Number(name="CONSUMER_RETRY_MAX_S", default=30.0, minimum=0.01, used_by=("consumer",),
           help="longest wait between attempts to write a batch while PostgreSQL fails",
           role=(RoleVariable("candlestack_consumer_retry_max_s"),)),

    Text(name="PG_HOST", default="localhost", form="host, address or Unix socket directory", used_by=DATABASE_USERS,
         help="PostgreSQL server",
         role=(RoleVariable("candlestack_pg_host",
                            differs_because="the first host of the inventory's postgresql group (localhost "
                                            "without one)"),)),
    Integer(name="PG_PORT", default=5432, minimum=1, maximum=65535, used_by=DATABASE_USERS,
            help="PostgreSQL port",
            role=(RoleVariable("candlestack_pg_port"),)),
    Text(name="PG_DATABASE", default="candlestack", used_by=DATABASE_USERS,
         help="database",
         role=(RoleVariable("candlestack_pg_database"),)),
    Text(name="PG_USER", default="candlestack", used_by=DATABASE_USERS,
         help="login",
         role=tuple(RoleVariable(f"candlestack_pg_{login}_user", role_default=f"candlestack_{login}",
                                 differs_because="one login per component, each granted only what it needs")
                    for login in PG_LOGINS)),
    Text(name="PG_PASSWORD", default=None, form="required over TCP; a Unix socket directory may do without",
         used_by=DATABASE_USERS,
         help="password of the login",
         role=tuple(RoleVariable(f"candlestack_pg_{login}_password")
                    for login in PG_LOGINS)),
    Choice(name="PG_SSLMODE", default="prefer",
           choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"), used_by=DATABASE_USERS,
           help="libpq's sslmode",
           role=(RoleVariable("candlestack_pg_sslmode", role_default="verify-full",
                              differs_because="a deployment verifies PostgreSQL's certificate and name "
                                              "against its own CA (roles/pki)"),)),
    Text(name="PG_SSLROOTCERT", default=None, form="path of a PEM file", used_by=DATABASE_USERS,
         help="CA certificate the server's certificate is checked against (libpq's and the JDBC "
              "driver's sslrootcert); unset: libpq's default, ~/.postgresql/root.crt",
         role=(RoleVariable("candlestack_pg_sslrootcert", role_default="/etc/ssl/candlestack/ca.crt",
                            differs_because="the deployment's CA, installed by roles/pki"),)),

    Listing(name="INTERVALS", default="1m,5m", form="comma-separated, of `1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d`",
            used_by=("aggregator", "audit"),
            help="candle intervals the aggregator builds (and the audit compares)",
            role=(RoleVariable("candlestack_intervals"),)),
    Text(name="SPARK_MASTER", default="local[2]", form="`local[N]`, `local[*]` or `spark://host:port[,host:port]`",
         used_by=("aggregator",),
         help="Spark master (`spark://host:7077` in production)",
         role=(RoleVariable("candlestack_spark_master",
                            differs_because="the inventory's spark_master host (local[2] without one)"),
               RoleVariable("candlestack_reconcile_spark_master", role_default="local[1]",
                            differs_because="reconcile runs in local mode: the long-running aggregator holds "
                                            "the cluster's executors"))),
    Text(name="SPARK_DRIVER_HOST", default=None, form="host or address", used_by=("aggregator",),
         help="address executors use to reach the driver; unset: Spark guesses",
         role=(RoleVariable("candlestack_spark_driver_host",
                            differs_because="this host's private address, which the cluster can reach"),)),
    Text(name="SPARK_AUTH_SECRET_FILE", default=None, form="path of a file", used_by=("aggregator",),
         help="file holding the cluster's shared secret (`spark.authenticate.secret`); set: the driver "
              "authenticates to the cluster and encrypts its RPC and block transfers (AES-GCM); unset: neither",
         not_in_role_because="the role writes candlestack_spark_auth_secret to a file only the aggregator's "
                             "group reads (<candlestack_config_dir>/spark-auth-secret) and names that file here"),
    # Fixed ports, so that a host firewall can let the cluster connect back to the driver; Spark
    # tries the next ports (spark.port.maxRetries, 16) when one is taken.
    Integer(name="SPARK_DRIVER_PORT", default=7079, maximum=65535, used_by=("aggregator",),
            help="`spark.driver.port`, the driver's RPC port (the next ones if taken); 0: a random port",
            role=(RoleVariable("candlestack_spark_driver_port"),)),
    Integer(name="SPARK_DRIVER_BLOCK_MANAGER_PORT", default=7080, maximum=65535, used_by=("aggregator",),
            help="`spark.driver.blockManager.port`, the driver's block transfer port (the next ones if taken); "
                 "0: a random port",
            role=(RoleVariable("candlestack_spark_driver_block_manager_port"),)),
    Integer(name="SPARK_BLOCK_MANAGER_PORT", default=7090, maximum=65535, used_by=("aggregator",),
            help="`spark.blockManager.port`, the executors' block transfer port (the next ones for further "
                 "executors on a worker); executors take it from the driver; 0: random ports",
            role=(RoleVariable("candlestack_spark_block_manager_port"),)),
    Text(name="SPARK_DRIVER_MEMORY", default="512m", form="JVM size such as `512m` or `2g`", used_by=("aggregator",),
         help="driver memory",
         role=(RoleVariable("candlestack_spark_driver_memory"),)),
    Text(name="SPARK_EXECUTOR_MEMORY", default="512m", form="JVM size such as `512m` or `2g`",
         used_by=("aggregator",),
         help="memory of each executor (must fit a worker)",
         role=(RoleVariable("candlestack_spark_executor_memory"),)),
    Integer(name="SPARK_EXECUTOR_CORES", default=0, maximum=1024, used_by=("aggregator",),
            help="cores of each executor; 0: Spark's default",
            role=(RoleVariable("candlestack_spark_executor_cores", role_default=1,
                               differs_because="small executors, so that the long-running aggregator's "
                                               "candlestack_spark_cores_max can spread over workers"),)),
    # The long-running aggregator caps itself so that a backfill can still get executors on a
    # shared cluster.
    Integer(name="SPARK_CORES_MAX", default=0, maximum=65536, used_by=("aggregator",),
            help="`spark.cores.max`, the cluster cores one application may hold; 0: all",
            role=(RoleVariable("candlestack_spark_cores_max", role_default=1,
                               differs_because="the long-running aggregator leaves cluster cores for backfills"),)),
    Text(name="JDBC_JAR", default="/usr/share/java/postgresql.jar", form="path", used_by=("aggregator",),
         help="PostgreSQL JDBC driver handed to Spark (Debian `libpostgresql-jdbc-java`)",
         role=(RoleVariable("candlestack_jdbc_jar"),)),
    Number(name="AGGREGATOR_TICK_S", default=2.0, minimum=0.1, used_by=("aggregator",),
           help="`aggregator run`: time between refreshes",
           role=(RoleVariable("candlestack_aggregator_tick_s"),)),
    # The rest mode: closed candles stay as fresh as the tick allows; only the open one waits.
    Number(name="AGGREGATOR_OPEN_REFRESH_S", default=30.0, minimum=0.0, used_by=("aggregator",),
           help="`aggregator run`: while every new trade is in the open 1m window, a tick runs no Spark job "
                "unless the open candles were refreshed longer ago than this; at or below the tick, every tick "
                "refreshes them",
           role=(RoleVariable("candlestack_aggregator_open_refresh_s"),)),
    # After a master restart, jobs wait for executors that never come instead of failing.
    Number(name="AGGREGATOR_JOB_TIMEOUT_S", default=60.0, minimum=1.0, used_by=("aggregator",),
           help="`aggregator run`: a tick's Spark job is cancelled after this long and the session rebuilt; "
                "the limit doubles after each timeout (up to 1 h) until a tick succeeds",
           role=(RoleVariable("candlestack_aggregator_job_timeout_s"),)),
    Integer(name="AGGREGATOR_BACKFILL_CHUNK_HOURS", default=24, minimum=1, maximum=24 * 366, used_by=("aggregator",),
            help="`aggregator backfill` and `reconcile`: the unit of a Spark job; consecutive chunks are "
                 "joined into one job up to CANDLESTACK_AGGREGATOR_BACKFILL_CHUNK_TRADES trades",
            not_in_role_because="reconcile, the only backfill a unit runs, covers candlestack_reconcile_hours "
                                "(2): less than one chunk; a backfill by hand sets it in its own environment"),
    Integer(name="AGGREGATOR_BACKFILL_CHUNK_TRADES", default=5_000_000, minimum=1, used_by=("aggregator",),
            help="`aggregator backfill`: at most this many trades in one Spark job, unless a single chunk "
                 "holds more (a sparse range is one job, a dense one a job per few chunks)",
            not_in_role_because="reconcile, the only backfill a unit runs, covers a couple of hours; a backfill "
                                "by hand sets it in its own environment"),
    Integer(name="AGGREGATOR_READ_PARTITIONS", default=4, minimum=1, maximum=1024, used_by=("aggregator",),
            help="parallel JDBC reads; also Spark's shuffle partitions (at least 2)",
            role=(RoleVariable("candlestack_aggregator_read_partitions"),)),

    Integer(name="RETENTION_DAYS", default=30, minimum=RETENTION_MIN_DAYS, used_by=("admin",),
            help="`db retention`: raw-trade partitions older than this are dropped",
            role=(RoleVariable("candlestack_retention_days"),)),
    Integer(name="PARTITIONS_AHEAD_DAYS", default=3, maximum=366, used_by=("admin",),
            help="`db partitions`: partitions are created for today and this many days after",
            role=(RoleVariable("candlestack_partitions_ahead_days"),)),

    Integer(name="AUDIT_LOOKBACK_MINUTES", default=60, minimum=1, maximum=7 * 24 * 60, used_by=("audit",),
            help="`audit`: compares the candles that opened in this many minutes before the settle delay",
            role=(RoleVariable("candlestack_audit_lookback_minutes"),)),
    # The aggregator refreshes touched windows every tick (2 s) and a late trade is stored within
    # seconds; two minutes leaves room for a restart of the aggregator.
    Number(name="AUDIT_SETTLE_S", default=120.0, used_by=("audit",),
           help="`audit`: a candle is compared once it closed this many seconds ago (not while being built)",
           role=(RoleVariable("candlestack_audit_settle_s"),)),
    # One klines request costs 2: a smaller budget could never send one.
    Integer(name="AUDIT_REST_WEIGHT_LIMIT", default=1000, minimum=2, used_by=("audit",),
            help="REST request weight a minute the audit allows itself (Binance: 6000 per IP, shared with "
                 "the producer; a klines request costs 2)",
            role=(RoleVariable("candlestack_audit_rest_weight_limit"),)),
)

SETTINGS: Mapping[str, Setting] = MappingProxyType({entry.name: entry for entry in TABLE})
assert len(SETTINGS) == len(TABLE), "a setting is in the table twice"

S = TypeVar("S", bound=Setting)


def setting(name: str, kind: type[S]) -> S:
    """The entry of ``CANDLESTACK_<name>``, which must be of ``kind``.

    Raises:
        LookupError: when the name is not in the table (every variable the code reads is).
        TypeError: when the entry is of another kind, e.g. an integer read as text.
    """
    entry = SETTINGS.get(name)
    if entry is None:
        raise LookupError(f"{PREFIX}{name} is not in the settings table (candlestack.core.setting_table)")
    if not isinstance(entry, kind):
        raise TypeError(f"{PREFIX}{name} is a setting of kind {type(entry).__name__}, not {kind.__name__}")
    return entry


def _default_cell(entry: Setting) -> str:
    if isinstance(entry, Port):
        return ", ".join(f"`{port}` {component}" for component, port in entry.defaults_by_component.items())
    value = entry.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{value:.0f}`"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's settings table: one row per variable, in the table's order."""
    rows = ["| variable | default | accepts | used by | what it does |", "|---|---|---|---|---|"]
    for entry in TABLE:
        cells = (f"`{entry.variable}`", _default_cell(entry), entry.accepts(), ", ".join(entry.used_by), entry.help)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def with_table(document: str) -> str:
    """``document`` with the text between the settings markers replaced by :func:`markdown_table`.

    Raises:
        ValueError: when the markers are missing or out of order.
    """
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"expected the lines {BEGIN!r} and then {END!r}")
    return document[: start + len(BEGIN)] + "\n" + markdown_table() + document[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlestack.core.setting_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the Markdown table")
    action.add_argument("--update", metavar="FILE", type=Path,
                        help="rewrite the table between the settings markers of FILE (the README)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    document = args.update.read_text(encoding="utf-8")
    updated = with_table(document)
    if updated != document:
        args.update.write_text(updated, encoding="utf-8")
        print(f"updated {args.update}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
