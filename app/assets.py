"""Fingerprinted, precompressed static files: `python -m app.assets build`.

`build` copies every file under app/static/ (except dist/) to app/static/dist/ with a content
hash in its name, writes `.gz` (and `.br` when the brotli module is installed) beside each
compressible file for nginx's `gzip_static`/`brotli_static`, and records the mapping in
dist/manifest.json. Templates call `asset_url("css/site.css")`, which uses the fingerprinted
name when the manifest exists (nginx may then cache it for a year) and the plain file otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

from flask import current_app, request, url_for

STATIC_DIR = Path(__file__).resolve().parent / "static"
DIST_DIR = STATIC_DIR / "dist"
MANIFEST = DIST_DIR / "manifest.json"
COMPRESSIBLE = {".css", ".js", ".svg", ".txt", ".json", ".html", ".ico", ".map"}

try:
    import brotli
except ImportError:  # optional: nginx then serves the .gz or compresses on the fly
    brotli = None


def build(static_dir: Path = STATIC_DIR, dist_dir: Path = DIST_DIR) -> dict[str, str]:
    if dist_dir.exists():
        shutil.rmtree(dist_dir)
    manifest = {}
    for source in sorted(static_dir.rglob("*")):
        if not source.is_file() or dist_dir in source.parents:
            continue
        relative = source.relative_to(static_dir)
        data = source.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:12]
        target_relative = relative.with_name(f"{relative.stem}.{digest}{relative.suffix}")
        target = dist_dir / target_relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if source.suffix in COMPRESSIBLE:
            # mtime=0 keeps the .gz byte-identical across builds of the same file.
            target.with_name(target.name + ".gz").write_bytes(gzip.compress(data, 9, mtime=0))
            if brotli is not None:
                target.with_name(target.name + ".br").write_bytes(brotli.compress(data))
        manifest[relative.as_posix()] = target_relative.as_posix()
    dist_dir.mkdir(parents=True, exist_ok=True)
    (dist_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _manifest() -> dict[str, str]:
    cached = current_app.extensions.get("asset_manifest")
    if cached is None:
        manifest_file = Path(current_app.static_folder or STATIC_DIR) / "dist" / "manifest.json"
        cached = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
        current_app.extensions["asset_manifest"] = cached
    return cached


def asset_url(path: str) -> str:
    # Every page asks for the same few URLs: each is built by url_for once per app (the
    # manifest is read once per app too) and mounting point.
    urls = current_app.extensions.setdefault("asset_urls", {})
    key = (request.script_root, path)
    url = urls.get(key)
    if url is None:
        fingerprinted = _manifest().get(path)
        filename = path if fingerprinted is None else f"dist/{fingerprinted}"
        url = urls[key] = url_for("static", filename=filename)
    return url


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m app.assets build", file=sys.stderr)
        return 2
    manifest = build()
    compression = "gzip + brotli" if brotli is not None else "gzip"
    print(f"built {len(manifest)} static files into {DIST_DIR} ({compression})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
