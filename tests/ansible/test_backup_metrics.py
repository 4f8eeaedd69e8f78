"""roles/pgbackrest/files/candlestack-backup-metrics: from ``pgbackrest info --output=json`` to
the node exporter's textfile format, without pgBackRest (a stand-in prints recorded output).

The recorded output is pgBackRest 2.45's (Debian bookworm) for a stanza with one full and two
differential backups.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import stat
import sys
from pathlib import Path
from types import ModuleType

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "pgbackrest" / "files" / "candlestack-backup-metrics"


def _backup(label: str, kind: str, start: int, stop: int, size: int, delta: int, repo_size: int,
            repo_delta: int) -> dict[str, object]:
    return {"archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
            "backrest": {"format": 5, "version": "2.45"}, "database": {"id": 1, "repo-key": 1}, "error": False,
            "info": {"delta": delta, "repository": {"delta": repo_delta, "size": repo_size}, "size": size},
            "label": label, "lsn": {"start": "0/3000028", "stop": "0/3000100"},
            "prior": None if kind == "full" else label.split("_", maxsplit=1)[0],
            "reference": None if kind == "full" else [label.split("_", maxsplit=1)[0]],
            "timestamp": {"start": start, "stop": stop}, "type": kind}


INFO = [{
    "archive": [{"database": {"id": 1, "repo-key": 1}, "id": "15-1", "max": "000000010000000000000007",
                 "min": "000000010000000000000001"}],
    "backup": [
        _backup("20261202-013929F", "full", 1796175569, 1796175572, 32945861, 32945861, 5791632, 5791632),
        _backup("20261202-013929F_20261202-013933D", "diff", 1796175573, 1796175575, 37902020, 15524105,
                7275344, 4486464),
        _backup("20261202-013929F_20261202-013955D", "diff", 1796175595, 1796175598, 38902020, 16524105,
                7475344, 4686464),
    ],
    "cipher": "aes-256-cbc", "db": [{"id": 1, "repo-key": 1, "system-id": 7714515310043186250, "version": "15"}],
    "name": "candlestack",
    "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"},
}]
EMPTY = [{"archive": [], "backup": [], "cipher": "aes-256-cbc", "db": [], "name": "candlestack",
          "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 1, "message": "missing stanza path"}}],
          "status": {"code": 1, "lock": {"backup": {"held": False}}, "message": "missing stanza path"}}]


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("candlestack_backup_metrics", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


metrics = _load()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# As root the script runs pgbackrest as postgres, who cannot enter pytest's directories.
AS = "--user=root"


def _stand_in(tmp_path: Path, output: object, exit_code: int = 0) -> Path:
    """An executable that prints ``output`` as JSON and exits with ``exit_code``, like pgbackrest info."""
    data = tmp_path / "info.json"
    data.write_text(json.dumps(output))
    program = tmp_path / "pgbackrest"
    program.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(data)!r}).read())\n"
                       f"sys.stderr.write('stand-in failure\\n' if {exit_code} else '')\nsys.exit({exit_code})\n")
    program.chmod(0o755)
    return program


def test_the_newest_backup_of_each_type_is_exported() -> None:
    samples = _samples(metrics.render(INFO[0], now=1796176000.5))
    full = (("stanza", "candlestack"), ("type", "full"))
    diff = (("stanza", "candlestack"), ("type", "diff"))
    assert samples[("candlestack_backup_last_success_timestamp_seconds", full)] == 1796175572
    assert samples[("candlestack_backup_last_success_timestamp_seconds", diff)] == 1796175598
    assert samples[("candlestack_backup_last_duration_seconds", diff)] == 3
    assert samples[("candlestack_backup_last_size_bytes", diff)] == 38902020
    assert samples[("candlestack_backup_last_delta_bytes", full)] == 32945861
    assert samples[("candlestack_backup_last_repository_size_bytes", diff)] == 7475344
    assert samples[("candlestack_backup_last_repository_delta_bytes", diff)] == 4686464
    assert samples[("candlestack_backup_count", full)] == 1
    assert samples[("candlestack_backup_count", diff)] == 2
    assert samples[("candlestack_backup_stanza_status", (("stanza", "candlestack"),))] == 0
    assert samples[("candlestack_backup_metrics_timestamp_seconds", (("stanza", "candlestack"),))] == 1796176000


def test_a_stanza_without_backups_exports_its_status_and_no_backup_time() -> None:
    samples = _samples(metrics.render(EMPTY[0], now=1796176000))
    assert samples[("candlestack_backup_stanza_status", (("stanza", "candlestack"),))] == 1
    assert not [name for name, _ in samples if name.startswith("candlestack_backup_last_")]


def test_the_file_is_replaced_whole_and_readable_by_the_exporter(tmp_path: Path) -> None:
    output = tmp_path / "textfile" / "pgbackrest-candlestack.prom"
    output.parent.mkdir()
    output.write_text("old\n")
    rc = metrics.main(["--stanza=candlestack", f"--output={output}", AS,
                       f"--pgbackrest={_stand_in(tmp_path, INFO)}"])
    assert rc == 0
    assert 'candlestack_backup_last_success_timestamp_seconds{stanza="candlestack",type="diff"} 1796175598' in (
        output.read_text().splitlines())
    assert stat.S_IMODE(output.stat().st_mode) == 0o644
    assert [path.name for path in output.parent.iterdir()] == [output.name]


def test_a_failing_info_keeps_the_old_file_and_fails(tmp_path: Path) -> None:
    output = tmp_path / "pgbackrest-candlestack.prom"
    output.write_text("old\n")
    rc = metrics.main(["--stanza=candlestack", f"--output={output}", AS,
                       f"--pgbackrest={_stand_in(tmp_path, [], exit_code=56)}"])
    assert rc == 1
    assert output.read_text() == "old\n"


def test_an_unknown_stanza_fails(tmp_path: Path) -> None:
    output = tmp_path / "pgbackrest-other.prom"
    rc = metrics.main(["--stanza=other", f"--output={output}", AS, f"--pgbackrest={_stand_in(tmp_path, INFO)}"])
    assert rc == 1
    assert not output.exists()
