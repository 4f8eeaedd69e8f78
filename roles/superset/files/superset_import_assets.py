#!/usr/bin/env python3
"""Import the candlestack assets bundle into Superset with ``ImportAssetsCommand``.

Run with the Superset virtualenv's python and ``SUPERSET_CONFIG_PATH`` set. The bundle
source is a directory laid out like an assets export (``metadata.yaml``, ``databases/``,
``datasets/``, ``charts/``, ``dashboards/``). Placeholders in the files (for example
``__CANDLESTACK_SQLALCHEMY_URI__``) are replaced by the values given on stdin, so no host
name or password lives in the repository.

``ImportAssetsCommand`` overwrites every object with the same UUID, so importing the same
bundle again updates in place and never duplicates. The importer still runs on every call;
the checksum marker only decides what is *reported*: ``changed`` is true when the rendered
bundle (or a database password) differs from the last successful import.

stdin: a JSON object
    {"substitutions": {"__PLACEHOLDER__": "value", ...},
     "passwords": {"databases/<file>.yaml": "secret", ...}}

stdout: one JSON object {"changed": bool, "checksum": str, "files": int, "zip": str|null}

Exit codes: 0 imported, 1 import failed (the message is on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

BUNDLE_ROOT = "candlestack_assets"
# Fixed timestamp so that the same content always gives the same zip bytes.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def read_bundle_dir(bundle_dir: Path) -> dict[str, str]:
    """Every YAML file under ``bundle_dir``, keyed by its bundle-relative path (``charts/x.yaml``)."""
    return {path.relative_to(bundle_dir).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(bundle_dir.rglob("*.yaml"))}


def read_bundle_json(bundle_json: Path) -> dict[str, str]:
    """The bundle as the role writes it: one JSON object mapping bundle paths to YAML text."""
    data = json.loads(bundle_json.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise SystemExit(f"error: {bundle_json} is not a JSON object of path -> text")
    return dict(sorted(data.items()))


def render_contents(sources: dict[str, str], substitutions: dict[str, str]) -> dict[str, str]:
    """Apply the placeholder substitutions to every file of the bundle.

    Returns a mapping of bundle-relative path (``charts/x.yaml``) to text, the shape
    ``ImportAssetsCommand`` expects.
    """
    contents: dict[str, str] = {}
    for name, source in sources.items():
        text = source
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        contents[name] = text
    if "metadata.yaml" not in contents:
        raise SystemExit("error: the bundle has no metadata.yaml")
    return contents


def bundle_checksum(contents: dict[str, str], passwords: dict[str, str]) -> str:
    """Hash the rendered bundle and the passwords, so that a password change also counts."""
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + contents[name].encode() + b"\0")
    for name in sorted(passwords):
        digest.update(b"password\0" + name.encode() + b"\0" + passwords[name].encode() + b"\0")
    return digest.hexdigest()


def build_zip(contents: dict[str, str]) -> bytes:
    """Build a deterministic zip with one root folder, as the import API and UI expect."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(contents):
            info = zipfile.ZipInfo(f"{BUNDLE_ROOT}/{name}", date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, contents[name])
    return buffer.getvalue()


def import_bundle(contents: dict[str, str], passwords: dict[str, str], username: str) -> None:
    """Run ``ImportAssetsCommand`` inside the Superset app context as ``username``."""
    from superset.app import create_app  # noqa: PLC0415 - needs SUPERSET_CONFIG_PATH set first

    app = create_app()
    with app.app_context():
        # Imported late: these modules need the app context.
        from superset.commands.importers.v1.assets import ImportAssetsCommand  # noqa: PLC0415
        from superset.utils.core import override_user  # noqa: PLC0415

        from superset import security_manager  # noqa: PLC0415

        user = security_manager.find_user(username=username)
        if user is None:
            raise SystemExit(f"error: Superset user {username!r} does not exist")
        with override_user(user):
            ImportAssetsCommand(contents, passwords=passwords).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle-dir", type=Path, help="assets source directory (YAML files)")
    source.add_argument("--bundle-json", type=Path, help="the same as one JSON file: bundle path -> YAML text")
    parser.add_argument("--username", required=True, help="Superset user that owns the imports")
    parser.add_argument("--marker", type=Path, help="checksum of the last successful import")
    parser.add_argument("--zip-out", type=Path, help="also write the rendered bundle as a zip here")
    args = parser.parse_args(argv)

    params = json.load(sys.stdin) if not sys.stdin.isatty() else {}
    substitutions: dict[str, str] = params.get("substitutions") or {}
    passwords: dict[str, str] = params.get("passwords") or {}

    sources = read_bundle_json(args.bundle_json) if args.bundle_json else read_bundle_dir(args.bundle_dir)
    contents = render_contents(sources, substitutions)
    leftover = sorted(name for name, text in contents.items() if any(p in text for p in ("__CANDLESTACK_",)))
    if leftover:
        print(f"error: placeholders left unsubstituted in {', '.join(leftover)}", file=sys.stderr)
        return 2

    checksum = bundle_checksum(contents, passwords)
    previous = args.marker.read_text().strip() if args.marker and args.marker.exists() else None

    try:
        import_bundle(contents, passwords, args.username)
    except Exception as exc:  # the command wraps every failure; show its details
        details = getattr(exc, "normalized_messages", None)
        print(f"error: import failed: {exc}", file=sys.stderr)
        if callable(details):
            print(json.dumps(details(), indent=2, default=str), file=sys.stderr)
        return 1

    if args.zip_out:
        args.zip_out.write_bytes(build_zip(contents))
    if args.marker:
        args.marker.write_text(checksum + "\n")

    result = {
        "changed": checksum != previous,
        "checksum": checksum,
        "files": len(contents),
        "zip": str(args.zip_out) if args.zip_out else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
