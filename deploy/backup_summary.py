"""The summary at the end of `make backup`: the copied dump, its size and every table's rows.

Called by deploy/backup.sh with the manifest it fetched (flaskstack-backup writes it beside each
dump). Standard library only: it runs with the machine's python3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--seconds", type=int, required=True, help="time of the whole backup")
    args = parser.parse_args()

    manifest = json.loads(args.manifest.read_text())
    dump = args.manifest.with_suffix(".dump")
    dump_path = dump.relative_to(Path.cwd()) if dump.is_relative_to(Path.cwd()) else dump
    print(f"\nbackup: {dump_path} ({human_size(manifest['size'])}, "
          f"sha256 {manifest['sha256'][:16]}…)")  # fmt: skip
    print(f"  database {manifest['database']} at {manifest['created_at']}, "
          f"PostgreSQL {manifest['postgres_version']}")  # fmt: skip
    tables = manifest["tables"]
    width = max(map(len, tables), default=0)
    for table, rows in sorted(tables.items()):
        print(f"  {table:<{width}}  {rows:>10} rows")
    print(f"  pg_dump took {manifest['dump_seconds']} s on the host; {args.seconds} s in all")


if __name__ == "__main__":
    main()
