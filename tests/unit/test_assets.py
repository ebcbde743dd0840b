"""Fingerprinted, precompressed static files and the template helper that finds them."""

from __future__ import annotations

import gzip
import json

import pytest

from app import create_app
from app.assets import asset_url, build, main


@pytest.fixture
def static_tree(tmp_path):
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body { color: black; }\n")
    (static / "logo.png").write_bytes(b"\x89PNG fake image")
    return static


def test_build_fingerprints_and_precompresses(static_tree):
    manifest = build(static_tree, static_tree / "dist")
    css = manifest["css/site.css"]
    assert css.startswith("css/site.") and css.endswith(".css") and len(css) > len("css/site.css")
    dist = static_tree / "dist"
    assert (dist / css).read_text() == "body { color: black; }\n"
    assert gzip.decompress((dist / f"{css}.gz").read_bytes()) == b"body { color: black; }\n"
    assert not (dist / f"{manifest['logo.png']}.gz").exists(), "images are not recompressed"
    assert json.loads((dist / "manifest.json").read_text()) == manifest


def test_build_is_repeatable(static_tree):
    first = build(static_tree, static_tree / "dist")
    gz = (static_tree / "dist" / f"{first['css/site.css']}.gz").read_bytes()
    assert build(static_tree, static_tree / "dist") == first
    assert (static_tree / "dist" / f"{first['css/site.css']}.gz").read_bytes() == gz


def test_templates_use_the_fingerprinted_name_once_built(static_tree):
    app = create_app({"APP_ENV": "testing"})
    app.static_folder = str(static_tree)
    with app.test_request_context():
        assert asset_url("css/site.css") == "/static/css/site.css"
    manifest = build(static_tree, static_tree / "dist")
    app = create_app({"APP_ENV": "testing"})  # a new release: the manifest is read at start
    app.static_folder = str(static_tree)
    with app.test_request_context():
        assert asset_url("css/site.css") == f"/static/dist/{manifest['css/site.css']}"
        assert asset_url("unknown.js") == "/static/unknown.js"


def test_the_command_line_builds_or_explains_its_usage(capsys):
    assert main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err
