"""Keep the OpenAPI descriptions the test fakes validate against, in tests/fakes/specs/.

    python scripts/specs.py add openai-openapi.json ~/src/openai-openapi/openapi.json \
        --source https://github.com/openai/openai-openapi --path openapi.json --commit <sha> \
        --licence "MIT, Copyright (c) OpenAI"
    python scripts/specs.py check          # every file matches the SHA-256 in manifest.json

Files are stored whole and gzipped (mtime 0, so the same input gives the same bytes); the
manifest records where each came from and the SHA-256 of the uncompressed JSON.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from pathlib import Path

SPECS = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "specs"
MANIFEST = SPECS / "manifest.json"


def load_manifest() -> dict[str, dict[str, str]]:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def add(name: str, source_file: Path, source: str, path: str, commit: str, licence: str) -> None:
    data = source_file.read_bytes()
    json.loads(data)  # refuse anything that is not JSON before it replaces a good copy
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    (SPECS / f"{name}.gz").write_bytes(buffer.getvalue())
    manifest = load_manifest() if MANIFEST.exists() else {}
    manifest[name] = {
        "source": source,
        "path": path,
        "commit": commit,
        "licence": licence,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"{name}: {len(data)} bytes, {len(buffer.getvalue())} gzipped, from {source} at {commit}")


def check() -> int:
    bad = 0
    for name, entry in load_manifest().items():
        digest = hashlib.sha256(gzip.decompress((SPECS / f"{name}.gz").read_bytes())).hexdigest()
        ok = digest == entry["sha256"]
        bad += not ok
        print(f"{name}: {'ok' if ok else f'sha256 {digest} does not match the manifest'}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="store (or replace) one spec file")
    a.add_argument("name", help="e.g. openai-openapi.json")
    a.add_argument("file", type=Path, help="the upstream file, as downloaded")
    for flag in ("--source", "--path", "--commit", "--licence"):
        a.add_argument(flag, required=True)
    sub.add_parser("check", help="verify every stored file against the manifest")
    args = parser.parse_args()
    if args.command == "add":
        add(args.name, args.file, args.source, args.path, args.commit, args.licence)
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
