"""The Superset assets bundle (superset/assets) on a real Superset, imported by the role's script.

Real services, no mocks: a throwaway PostgreSQL cluster holds Superset's metadata database
and a candlestack database migrated with `candlestack db migrate`; Superset 6.1 runs from a
virtualenv built from the role's lock for the system Python, roles/superset/files/lock/pythonX.Y.txt
(cached in /var/cache/candlestack, keyed by the lock's hash); the bundle is imported twice with
roles/superset/files/superset_import_assets.py; gunicorn serves the chart data API.

Environment:
    CANDLESTACK_BIN            the candlestack executable (default: `candlestack` on PATH)
    CANDLESTACK_SUPERSET_CACHE where the Superset venv is cached (/var/cache/candlestack)
    CANDLESTACK_SUPERSET_FRESH set to run `superset db upgrade` + `init` even when the cached
                               dump of their result (next to the venv) exists
    PG_BIN                     PostgreSQL binaries (default: the newest in /usr/lib/postgresql)
    CANDLESTACK_SCREENSHOT_DIR where to write the dashboards' screenshots when Chromium and
                               playwright-core are present (default /tmp)
    CANDLESTACK_NODE_MODULES   node_modules holding playwright-core
                               (default /var/cache/candlestack/node/node_modules)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.services import newest_postgresql_bin

pytestmark = pytest.mark.superset

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles/superset"
ASSETS = ROOT / "superset/assets"
IMPORT_SCRIPT = ROLE / "files/superset_import_assets.py"
ADMIN_SCRIPT = ROLE / "files/superset_admin_account.py"
HERE = Path(__file__).resolve().parent

PG_BIN = Path(os.environ.get("PG_BIN") or newest_postgresql_bin())
CACHE = Path(os.environ.get("CANDLESTACK_SUPERSET_CACHE", "/var/cache/candlestack"))
SYSTEM_PYTHON = "/usr/bin/python3"
ADMIN = ("admin", "test-admin-password")
SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdef"
PASSWORDS = {"superset": "meta-pw", "candlestack_owner": "owner-pw", "candlestack_superset": "read-pw"}

# Plot areas of the candlestick geometry (see datasets/candlestack/candlestick_svg.yaml): the
# price chart's panel, the volume chart's bars, the x range both share.
PRICE_TOP, PRICE_BOTTOM, VOLUME_TOP, VOLUME_BOTTOM, PLOT_LEFT, PLOT_RIGHT = 30, 300, 30, 125, 10, 870
# 24 h change of each symbol's last price, as the test data sets it up (Latest prices).
CHANGE_24H = {"BTCUSDT": 0.0234, "ETHUSDT": -0.0123}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, input=input, text=True, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"{cmd[:4]} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


# --- Superset virtualenv ------------------------------------------------------------------


def superset_venv() -> Path:
    """The cached Superset venv, installed as the role installs it (built if missing)."""
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lock = ROLE / f"files/lock/python{version}.txt"
    assert lock.is_file(), f"the superset role has no lock for Python {version} ({SYSTEM_PYTHON})"
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    venv = CACHE / f"superset-venv-{key}"
    if (venv / ".complete").exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    run([SYSTEM_PYTHON, "-m", "venv", str(venv)])
    run(
        [
            str(venv / "bin/pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "-r",
            str(lock),
        ],
        timeout=1200,
        env={**os.environ, "MSGPACK_PUREPYTHON": "1"},
    )
    (venv / ".complete").write_text(key + "\n")
    return venv


# --- PostgreSQL -----------------------------------------------------------------------------


@dataclass
class Postgres:
    data: Path
    socket_dir: Path
    port: int

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        proc = run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-d",
                database,
            ],
            input=sql,
        )
        return proc.stdout.strip()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="candlestack-superset-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(workdir: Path) -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    pg_dir = workdir / "pg"
    pg_dir.mkdir()
    shutil.chown(pg_dir, "postgres", "postgres")
    pg = Postgres(data=pg_dir / "data", socket_dir=pg_dir, port=free_port())
    as_pg = ["runuser", "-u", "postgres", "--"]
    run(
        [
            *as_pg,
            str(PG_BIN / "initdb"),
            "-D",
            str(pg.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]
    )
    run(
        [
            *as_pg,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(pg.data),
            "-l",
            str(pg_dir / "log"),
            "-w",
            "-o",
            f"-p {pg.port} -k {pg.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c TimeZone=UTC",
            "start",
        ]
    )
    try:
        yield pg
    finally:
        subprocess.run(
            [*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(pg.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="module")
def databases(postgres: Postgres) -> Postgres:
    """What the postgresql role sets up: databases, group roles, login users."""
    postgres.psql(f"""
        CREATE ROLE superset LOGIN PASSWORD '{PASSWORDS["superset"]}';
        CREATE DATABASE superset OWNER superset;
        CREATE ROLE candlestack_owner LOGIN PASSWORD '{PASSWORDS["candlestack_owner"]}';
        CREATE DATABASE candlestack OWNER candlestack_owner;
        CREATE ROLE candlestack_ingest NOLOGIN;
        CREATE ROLE candlestack_aggregate NOLOGIN;
        CREATE ROLE candlestack_prune NOLOGIN;
        CREATE ROLE candlestack_read NOLOGIN;
        CREATE ROLE candlestack_superset LOGIN PASSWORD '{PASSWORDS["candlestack_superset"]}'
            IN ROLE candlestack_read;
    """)
    candlestack = os.environ.get("CANDLESTACK_BIN") or shutil.which("candlestack")
    if not candlestack:
        pytest.skip("no candlestack executable (set CANDLESTACK_BIN)")
    env = {
        **os.environ,
        "CANDLESTACK_PG_HOST": "127.0.0.1",
        "CANDLESTACK_PG_PORT": str(postgres.port),
        "CANDLESTACK_PG_DATABASE": "candlestack",
        "CANDLESTACK_PG_USER": "candlestack_owner",
        "CANDLESTACK_PG_PASSWORD": PASSWORDS["candlestack_owner"],
        "CANDLESTACK_PG_SSLMODE": "disable",
    }
    run([candlestack, "db", "migrate"], env=env)
    return postgres


@dataclass
class Candle:
    symbol: str
    timeframe: str
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    taker_buy_volume: float


def make_candles(symbol: str, start_price: float, count: int, seed: int, end: datetime) -> list[Candle]:
    """A 1m random walk ending at `end`, with one zero-volume filler candle."""
    rng = random.Random(seed)
    candles: list[Candle] = []
    price = start_price
    first = end - timedelta(minutes=count)
    for i in range(count):
        if i == count // 2:  # Binance's filler: no trade, everything = previous close
            candles.append(Candle(symbol, "1m", first + timedelta(minutes=i), price, price, price, price, 0.0, 0, 0.0))
            continue
        open_ = price
        close = max(open_ * (1 + rng.gauss(0, 0.002)), start_price * 0.5)
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.001)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.001)))
        volume = round(rng.uniform(0.5, 20), 4)
        candles.append(
            Candle(
                symbol,
                "1m",
                first + timedelta(minutes=i),
                round(open_, 2),
                round(high, 2),
                round(low, 2),
                round(close, 2),
                volume,
                rng.randint(5, 200),
                round(volume * rng.uniform(0.1, 0.9), 4),
            )
        )
        price = round(close, 2)
    return candles


@pytest.fixture(scope="module")
def market_data(databases: Postgres) -> dict[str, list[Candle]]:
    """A few trades, candles, symbol states, dead letters and one gap, as the pipeline writes."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    series = {
        "BTCUSDT": make_candles("BTCUSDT", 91000.0, 90, 1, end),
        "ETHUSDT": make_candles("ETHUSDT", 3100.0, 40, 2, end),
    }
    rows = []
    for candles in series.values():
        for c in candles:
            rows.append(
                f"('{c.symbol}', '{c.timeframe}', '{c.open_time.isoformat()}', "
                f"'{(c.open_time + timedelta(minutes=1)).isoformat()}', {c.open}, "
                f"{c.high}, {c.low}, {c.close}, {c.volume}, {c.volume * c.close:.4f}, "
                f"{c.trade_count}, {c.taker_buy_volume})"
            )
    databases.psql(
        f"""
        INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,
                             volume, quote_volume, trade_count, taker_buy_volume)
        VALUES {", ".join(rows)};
        -- 5m candles rolled up from the 1m ones (only to offer a second timeframe).
        INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,
                             volume, quote_volume, trade_count, taker_buy_volume)
        SELECT symbol, '5m', w, w + interval '5 minutes',
               (array_agg(open ORDER BY open_time))[1], max(high), min(low),
               (array_agg(close ORDER BY open_time DESC))[1], sum(volume), sum(quote_volume),
               sum(trade_count), sum(taker_buy_volume)
        FROM (SELECT *, date_bin('5 minutes', open_time, '2000-01-01') AS w
              FROM candles WHERE timeframe = '1m') m
        GROUP BY symbol, w;
        SELECT ensure_trade_partitions(current_date - 1, current_date + 1);
        INSERT INTO trades (symbol, trade_id, stream, price, qty, trade_time, event_time,
                            buyer_is_maker, ingest_time, stored_at)
        SELECT s.symbol, g, 'trade', s.price + (g % 7), 0.01 * (1 + g % 5),
               now() - (300 - g) * interval '10 seconds',
               now() - (300 - g) * interval '10 seconds',
               g % 2 = 0,
               now() - (300 - g) * interval '10 seconds' + interval '40 milliseconds',
               now() - (300 - g) * interval '10 seconds' + (50 + g % 90) * interval '1 millisecond'
        FROM (VALUES ('BTCUSDT', 91000), ('ETHUSDT', 3100)) AS s(symbol, price),
             generate_series(1, 300) AS g;
        INSERT INTO symbol_state (symbol, last_trade_id, last_price, last_trade_time,
                                  last_stored_at, trades_stored)
        SELECT DISTINCT ON (symbol) symbol, trade_id, price, trade_time, stored_at, 300
        FROM trades ORDER BY symbol, trade_id DESC;
        -- One 1m candle ending 24 h before each symbol's last trade (after the 5m roll-up, which
        -- it must not join): its close makes the 24 h change exactly CHANGE_24H.
        INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,
                             volume, quote_volume, trade_count, taker_buy_volume)
        SELECT s.symbol, '1m', t.o, t.o + interval '1 minute', t.p, t.p, t.p, t.p, 1, t.p, 1, 0.5
        FROM symbol_state s
        JOIN (VALUES {", ".join(f"('{k}', {v})" for k, v in CHANGE_24H.items())}) AS ch(symbol, change)
            USING (symbol)
        CROSS JOIN LATERAL (
            SELECT s.last_price / (1 + ch.change) AS p,
                   date_bin('1 minute', s.last_trade_time - interval '24 hours 1 minute',
                            timestamptz 'epoch') AS o) t;
        INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, payload, field, reason)
        VALUES ('candlestack.trades', 0, 17, 'not json', NULL, 'invalid JSON'),
               ('candlestack.trades', 2, 99, '{{"p":"-1"}}', 'price', 'price must be > 0');
        INSERT INTO ingest_gaps (symbol, stream, from_id, to_id, reason, detected_at)
        VALUES ('BTCUSDT', 'trade', 1001, 1020, 'REST gap fill exceeded 100000 trades', now());
    """,
        database="candlestack",
    )
    return series


# --- Superset -----------------------------------------------------------------------------


@dataclass
class Superset:
    venv: Path
    env: dict[str, str]
    url: str
    metadata: Postgres
    import_runs: list[dict[str, Any]]
    import_seconds: list[float]

    def import_bundle(self, marker: Path) -> dict[str, Any]:
        params = {
            "substitutions": {
                "__CANDLESTACK_SQLALCHEMY_URI__": (
                    f"postgresql+psycopg2://candlestack_superset:XXXXXXXXXX@127.0.0.1:"
                    f"{self.metadata.port}/candlestack?sslmode=disable"
                )
            },
            "passwords": {"databases/candlestack.yaml": PASSWORDS["candlestack_superset"]},
        }
        start = time.monotonic()
        proc = run(
            [
                str(self.venv / "bin/python"),
                str(IMPORT_SCRIPT),
                "--bundle-dir",
                str(ASSETS),
                "--username",
                ADMIN[0],
                "--marker",
                str(marker),
                "--zip-out",
                str(marker.with_suffix(".zip")),
            ],
            env=self.env,
            input=json.dumps(params),
        )
        self.import_seconds.append(time.monotonic() - start)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        self.import_runs.append(result)
        return result

    def counts(self) -> dict[str, int]:
        out = self.metadata.psql(
            "SELECT (SELECT count(*) FROM dbs), (SELECT count(*) FROM tables), "
            "(SELECT count(*) FROM slices), (SELECT count(*) FROM dashboards), "
            "(SELECT count(*) FROM dashboard_slices), (SELECT count(*) FROM table_columns), "
            "(SELECT count(*) FROM sql_metrics)",
            database="superset",
        )
        keys = ["dbs", "tables", "slices", "dashboards", "dashboard_slices", "columns", "metrics"]
        return dict(zip(keys, (int(v) for v in out.split("|")), strict=True))

    def request(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc


@pytest.fixture(scope="module")
def superset(workdir: Path, market_data: dict[str, list[Candle]], databases: Postgres) -> Iterator[Superset]:
    venv = superset_venv()
    home = workdir / "superset_home"
    home.mkdir()
    config = workdir / "superset_config.py"
    overrides = {
        "superset_secret_key": SECRET_KEY,
        "superset_metadata_db_host": "127.0.0.1",
        "superset_metadata_db_port": databases.port,
        "superset_metadata_db_password": PASSWORDS["superset"],
        # The test's PostgreSQL has no certificate; TLS to the metadata database is checked on
        # the deployed hosts (Molecule).
        "superset_metadata_db_sslmode": "disable",
        "superset_behind_proxy": False,
    }
    run([str(venv / "bin/python"), str(HERE / "render_config.py"), str(ROLE), str(config)], input=json.dumps(overrides))
    env = {
        **os.environ,
        "SUPERSET_CONFIG_PATH": str(config),
        "SUPERSET_HOME": str(home),
        "PYTHONPATH": "",
        "FLASK_APP": "superset.app:create_app()",
    }
    superset_cli = str(venv / "bin/superset")
    timings: dict[str, float] = {}
    # `db upgrade` + `init` take 1-2 minutes; their result depends only on the venv, so it is
    # cached as a dump next to the venv (CANDLESTACK_SUPERSET_FRESH=1 forces the full path).
    snapshot = venv / "metadata-after-init.sql"
    start = time.monotonic()
    if snapshot.exists() and not os.environ.get("CANDLESTACK_SUPERSET_FRESH"):
        databases.psql(snapshot.read_text(), database="superset")
        timings["restore metadata snapshot"] = time.monotonic() - start
    else:
        run([superset_cli, "db", "upgrade"], env=env, timeout=600)
        timings["db upgrade"] = time.monotonic() - start
        start = time.monotonic()
        run([superset_cli, "init"], env=env, timeout=600)
        timings["init"] = time.monotonic() - start
        dump = run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_dump"),
                "--no-owner",
                "--no-privileges",
                "-h",
                str(databases.socket_dir),
                "-p",
                str(databases.port),
                "superset",
            ]
        )
        snapshot.write_text("SET ROLE superset;\n" + dump.stdout)
    # The role's admin script: the password on stdin, never in the process's arguments.
    account = {"username": ADMIN[0], "firstname": "Superset", "lastname": "Admin",
               "email": "admin@candlestack.invalid", "password": "first-password"}
    python = str(venv / "bin/python")
    outcomes = []
    for password in ("first-password", "first-password", ADMIN[1]):
        done = run([python, str(ADMIN_SCRIPT)], env=env, input=json.dumps({**account, "password": password}))
        outcomes.append(done.stdout.strip().splitlines()[-1])
    assert outcomes == ["created", "unchanged", "password reset"]

    port = free_port()
    log = (workdir / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            str(venv / "bin/gunicorn"),
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "superset.app:create_app()",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = Superset(
        venv=venv, env=env, url=f"http://127.0.0.1:{port}", metadata=databases, import_runs=[], import_seconds=[]
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(app.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "gunicorn did not answer /health:\n" + (workdir / "gunicorn.log").read_text()[-5000:]
                )
            time.sleep(1)
        print(f"\nsuperset timings: {timings}", file=sys.stderr)
        yield app
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def imported(superset: Superset, workdir: Path) -> Superset:
    marker = workdir / "assets.sha256"
    first = superset.import_bundle(marker)
    assert first["changed"] is True
    superset.first_counts = superset.counts()  # type: ignore[attr-defined]
    second = superset.import_bundle(marker)
    assert second["changed"] is False, "same bundle imported twice must report no change"
    assert second["checksum"] == first["checksum"]
    return superset


@pytest.fixture(scope="module")
def token(imported: Superset) -> str:
    body = {"username": ADMIN[0], "password": ADMIN[1], "provider": "db", "refresh": False}
    return str(imported.request("POST", "/api/v1/security/login", body=body)["access_token"])


def bundle_uuids() -> dict[str, set[str]]:
    """Top-level `uuid:` of every YAML file in the bundle, per kind."""
    found: dict[str, set[str]] = {}
    for kind in ("databases", "datasets", "charts", "dashboards"):
        for path in (ASSETS / kind).rglob("*.yaml"):
            match = re.search(r"^uuid: ([0-9a-f-]{36})$", path.read_text(), re.MULTILINE)
            assert match, f"{path} has no top-level uuid"
            found.setdefault(kind, set()).add(match.group(1))
    return found


def chart_ids(superset: Superset) -> dict[str, tuple[int, str]]:
    out = superset.metadata.psql("SELECT uuid, id, slice_name FROM slices", database="superset")
    ids = {}
    for line in out.splitlines():
        uuid, id_, name = line.split("|", 2)
        ids[uuid] = (int(id_), name)
    return ids


# --- Tests ----------------------------------------------------------------------------------


def test_objects_exist_with_the_bundle_uuids(imported: Superset) -> None:
    tables = {"databases": "dbs", "datasets": "tables", "charts": "slices", "dashboards": "dashboards"}
    for kind, uuids in bundle_uuids().items():
        out = imported.metadata.psql(f"SELECT uuid FROM {tables[kind]}", database="superset")
        assert uuids <= set(out.split()), f"{kind}: missing {uuids - set(out.split())}"
    titles = imported.metadata.psql(
        "SELECT dashboard_title FROM dashboards ORDER BY 1", database="superset"
    ).splitlines()
    assert titles == ["Markets", "Pipeline health"]


def test_second_import_changes_no_counts(imported: Superset) -> None:
    first = imported.first_counts  # type: ignore[attr-defined]
    assert imported.counts() == first
    uuids = bundle_uuids()
    assert first["dbs"] == len(uuids["databases"])
    assert first["tables"] == len(uuids["datasets"])
    assert first["slices"] == len(uuids["charts"])
    assert first["dashboards"] == len(uuids["dashboards"])
    assert first["dashboard_slices"] == len(uuids["charts"])


def test_database_password_is_not_in_the_bundle_and_the_zip_is_reproducible(imported: Superset, workdir: Path) -> None:
    for path in ASSETS.rglob("*.yaml"):
        assert PASSWORDS["candlestack_superset"] not in path.read_text()
    zip_bytes = (workdir / "assets.zip").read_bytes()
    assert PASSWORDS["candlestack_superset"].encode() not in zip_bytes
    assert imported.import_runs[0]["checksum"] == imported.import_runs[1]["checksum"]


def test_every_chart_returns_rows(imported: Superset, token: str) -> None:
    ids = chart_ids(imported)
    for uuid in bundle_uuids()["charts"]:
        chart_id, name = ids[uuid]
        payload = imported.request("GET", f"/api/v1/chart/{chart_id}/data/", token=token)
        for result in payload["result"]:
            assert not result.get("error"), f"{name}: {result.get('error')}"
            assert result["status"] == "success", f"{name}: {result['status']}"
            assert result["rowcount"] > 0 and result["data"], f"{name} returned no rows"


def candlestick_rows(imported: Superset, token: str, extra_filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candlestick chart's data, as the dashboard asks for it with its native filters."""
    ids = chart_ids(imported)
    chart_id = next(i for i, name in ids.values() if name == "Candlestick")
    chart = imported.request("GET", f"/api/v1/chart/{chart_id}", token=token)["result"]
    query_context = json.loads(chart["query_context"])
    for query in query_context["queries"]:
        query["filters"] = [*query.get("filters", []), *extra_filters]
    query_context["form_data"]["extra_form_data"] = {"filters": extra_filters}
    payload = imported.request("POST", "/api/v1/chart/data", token=token, body=query_context)
    result = payload["result"][0]
    assert not result.get("error"), result.get("error")
    return list(result["data"])


@pytest.mark.parametrize(("symbol", "timeframe"), [("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("BTCUSDT", "5m")])
def test_candlestick_geometry_is_sensible(
    imported: Superset, token: str, market_data: dict[str, list[Candle]], symbol: str, timeframe: str
) -> None:
    filters = [{"col": "symbol", "op": "IN", "val": [symbol]}, {"col": "timeframe", "op": "IN", "val": [timeframe]}]
    rows = candlestick_rows(imported, token, filters)
    assert {r["symbol"] for r in rows} == {symbol}, "the native filter must pick the series"
    assert {r["timeframe"] for r in rows} == {timeframe}
    candles = [r for r in rows if r["is_candle"]]
    source = market_data[symbol]
    expected = min(
        60,
        len(source) + 1  # the 1m candle of 24 h before (market_data)
        if timeframe == "1m"
        else len({c.open_time.replace(minute=c.open_time.minute - c.open_time.minute % 5) for c in source}),
    )
    assert len(candles) == expected
    assert sum(1 for r in rows if r["is_grid"]) == 5
    assert sum(1 for r in rows if r["is_title"]) == 1
    scale = [r["label"] for r in rows if r["is_vscale"]]  # the volume chart's 0 and maximum
    assert scale[0] == "0" and len(scale) == 2, scale
    if timeframe == "1m":
        assert float(scale[1]) == pytest.approx(max(c.volume for c in source[-60:])), scale
    [hint] = [r["label"] for r in rows if r["is_hint"]]
    assert hint.startswith("BTCUSDT, ETHUSDT - switch with the filter"), hint  # what else there is, and how
    assert any(r["is_xlabel"] for r in rows)
    xs = []
    for r in candles:
        assert r["body_h"] >= 1
        assert r["body_w"] >= 1
        assert PRICE_TOP - 0.01 <= r["y1"] <= r["y2"] <= PRICE_BOTTOM + 0.01, r  # wick in plot
        assert r["y1"] - 0.01 <= r["body_y"], r  # body starts below the high
        assert r["body_y"] + r["body_h"] <= r["y2"] + 1.01, r  # and ends at the low (+1 px min)
        assert r["body_x"] >= PLOT_LEFT and r["body_x"] + r["body_w"] <= PLOT_RIGHT + 0.01
        assert r["vol_y"] >= VOLUME_TOP and r["vol_y"] + r["vol_h"] <= VOLUME_BOTTOM + 0.01
        assert r["vol_h"] >= 1, r  # every candle has a visible volume bar, fillers too
        # Taker buys: the bottom part of the bar, in proportion to the candle's taker_buy_volume.
        assert r["buy_y"] + r["buy_h"] == pytest.approx(VOLUME_BOTTOM, abs=0.02), r
        assert r["buy_h"] <= r["vol_h"] + 0.01, r
        assert r["color"] in {"#26a69a", "#ef5350", "#9e9e9e"}
        assert r["vol_color"] == ("#bdbdbd" if r["color"] == "#9e9e9e" else "#e57373"), r
        xs.append(r["x1"])
    assert xs == sorted(xs) and len(set(xs)) == len(xs), "candles left to right, no overlap"
    # The split matches the data: volume / taker buys ratio of the highest bar's candle.
    top = max(candles, key=lambda r: r["vol_h"])
    assert top["vol_h"] == pytest.approx(VOLUME_BOTTOM - VOLUME_TOP, abs=0.01)
    if timeframe == "1m":
        by_minute = {c.open_time.strftime("%Y-%m-%d %H:%M"): c for c in source}
        c = by_minute[top["label"][:16]]
        assert top["buy_h"] / top["vol_h"] == pytest.approx(c.taker_buy_volume / c.volume, abs=0.01)
    assert min(r["y1"] for r in candles) == pytest.approx(PRICE_TOP, abs=0.01)
    assert max(r["y2"] for r in candles) == pytest.approx(PRICE_BOTTOM, abs=0.01)
    if timeframe == "1m":
        assert any(r["color"] == "#9e9e9e" for r in candles), "filler candle drawn grey"


def test_physical_datasets_list_columns_that_exist(databases: Postgres) -> None:
    """Each physical dataset's columns are its table's; candles lists every kline field."""
    for path in sorted((ASSETS / "datasets").rglob("*.yaml")):
        dataset = yaml.safe_load(path.read_text())
        if dataset["sql"]:
            continue
        out = databases.psql(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = 'public' AND table_name = '{dataset['table_name']}'",
            database="candlestack",
        )
        listed = {c["column_name"] for c in dataset["columns"]}
        assert listed <= set(out.split()), f"{path.name}: no such column {listed - set(out.split())}"
        if dataset["table_name"] == "candles":
            kline = {"taker_buy_volume", "taker_buy_quote_volume", "first_raw_trade_id", "last_raw_trade_id"}
            assert kline <= listed


def test_latest_prices_has_the_24h_change(imported: Superset, token: str) -> None:
    """Latest prices: last price against the close of the 1m candle that ended 24 h earlier."""
    ids = chart_ids(imported)
    chart_id = next(i for i, name in ids.values() if name == "Latest prices")
    payload = imported.request("GET", f"/api/v1/chart/{chart_id}/data/", token=token)
    rows = {r["symbol"]: r for r in payload["result"][0]["data"]}
    assert set(rows) == set(CHANGE_24H)
    for symbol, change in CHANGE_24H.items():
        assert rows[symbol]["change_24h"] == pytest.approx(change, abs=1e-6), rows[symbol]
    assert list(rows["BTCUSDT"]) == ["symbol", "last_price", "change_24h", "last_trade_time"]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_signed_out_event_beacon_leaves_the_session_cookie_alone(imported: Superset) -> None:
    """The login page's unload beacon must not re-set the signed-out cookie (apache/superset#36186).

    The beacon to /superset/log/ leaves while the login POST is in flight. Superset answers a
    signed-out beacon with a redirect to /login/ and a Set-Cookie of the old session; arriving
    after the login's answer, that cookie signed the browser out again (3 logins in 25).
    """
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(imported.url + "/login/", timeout=30) as page:
        cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith("session=")
    beacon = urllib.request.Request(
        imported.url + "/superset/log/?explode=events",
        data=b"events=%5B%5D",
        method="POST",
        headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        opener.open(beacon, timeout=30)
    except urllib.error.HTTPError as answer:
        status, headers = answer.code, answer.headers
    else:
        raise AssertionError("a signed-out event beacon was accepted")
    assert (status, headers.get_all("Set-Cookie")) == (401, None)


def test_dashboard_screenshots(imported: Superset, token: str) -> None:
    """Screenshots both dashboards with headless Chromium, when it is installed.

    The PNGs are for a human to look at; here only what the pages drew is checked: the
    candlestick's SVG on Markets, and no Content-Security-Policy error on either.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    node_modules = Path(os.environ.get("CANDLESTACK_NODE_MODULES", CACHE / "node/node_modules"))
    if not chromium or not shutil.which("node") or not (node_modules / "playwright-core").exists():
        pytest.skip("chromium, node or playwright-core missing")
    out_dir = Path(os.environ.get("CANDLESTACK_SCREENSHOT_DIR", "/tmp"))
    for slug in ("candlestack-markets", "candlestack-pipeline-health"):
        out = out_dir / f"{slug}.png"
        env = {
            **os.environ,
            "NODE_PATH": str(node_modules),
            "CHROMIUM": chromium,
            "SUPERSET_URL": imported.url,
            "SUPERSET_USER": ADMIN[0],
            "SUPERSET_PASSWORD": ADMIN[1],
            "OUT": str(out),
            "DASHBOARD": slug,
        }
        proc = run(["node", str(HERE / "screenshot.cjs")], env=env, timeout=180)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n{slug}: {out} {report}", file=sys.stderr)
        assert out.exists() and out.stat().st_size > 10_000
        assert not report["errors"], report
        if slug == "candlestack-markets":
            check_markets_as_drawn(report["markets"])
            # The preselected symbol is applied, not only shown: the charts' queries carried it.
            ids = {name: chart_id for chart_id, name in chart_ids(imported).values()}
            for name in ("Candlestick", "Volume per candle"):
                filters = report["chart_filters"][str(ids[name])]
                assert {"col": "symbol", "op": "IN", "val": ["BTCUSDT"]} in filters, (name, filters)


def check_markets_as_drawn(drawn: dict[str, Any]) -> None:
    """What a new reader of Markets sees (screenshot.cjs's readMarkets, in page pixels)."""
    # The symbol choice: a single-choice filter that says so, preselected; the candlestick's
    # title line shows that symbol and names the others and where to switch.
    assert "Symbol - pick one" in drawn["filter_text"], drawn["filter_text"]
    assert "BTCUSDT" in drawn["filter_selected"], drawn["filter_selected"]
    title = " ".join(drawn["price_texts"])
    assert title.startswith("BTCUSDT  1m"), title
    assert "BTCUSDT, ETHUSDT - switch with the filter \"Symbol - pick one\" (left)" in title, title
    # Volume: one visible bar under each candle, centred on it.
    assert drawn["candles"] == 60, drawn["candles"]
    bars = drawn["volume_bars"]
    assert len(bars) == drawn["candles"], (len(bars), drawn["candles"])
    assert all(bar["h"] > 0 for bar in bars), bars
    for candle_x, bar in zip(drawn["candle_x"], bars, strict=True):
        assert abs(candle_x - bar["x"]) <= 1, (candle_x, bar)
    # The taker split: a buys part in every bar, a sells part where the bar is taller, a legend.
    buys = drawn["buy_bars"]
    assert len(buys) == len(bars) and all(b["fill"] == "#26a69a" for b in buys), buys
    assert sum(1 for bar, buy in zip(bars, buys, strict=True) if 0 < buy["h"] < bar["h"]) >= 50
    assert {"taker buys", "taker sells"} <= set(drawn["volume_texts"]), drawn["volume_texts"]
    # Latest prices: every column header inside the table's visible box.
    assert drawn["table_headers"] == ["Symbol", "Last price", "24 h change", "Last trade (UTC)"], drawn
    shown, whole = drawn["last_header_visible"], drawn["last_header"]
    assert shown["width"] >= whole["width"] - 1 and shown["height"] >= whole["height"] - 1, (shown, whole)
    # 24 h change, formatted as a signed percentage (some d3 versions write U+2212 for minus).
    expected = [f"{v * 100:+.2f}%" for _, v in sorted(CHANGE_24H.items())]
    assert [cell.replace("\u2212", "-") for cell in drawn["change_cells"]] == expected, drawn["change_cells"]
