"""deploy/manifest.py: the app's flaskstack.toml, checked before anything is built or deployed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("flaskstack_manifest", REPO / "deploy/manifest.py")
manifest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(manifest)

APP = {"files": ["app"], "wsgi": "app.wsgi:app"}


@pytest.mark.parametrize("directory", [REPO, REPO / "examples/guestbook"])
def test_the_shipped_manifests_are_valid(directory):
    loaded = manifest.load(directory)
    assert loaded["app"]["wsgi"]
    for key in manifest.APP_KEYS:
        assert key in loaded["app"], "every key present, None when the app has no such step"


def test_defaults_mean_no_step():
    parsed = manifest.parse({"app": dict(APP)})
    app = parsed["app"]
    assert (app["migrate"], app["worker"], app["static"], app["build"]) == (None,) * 4
    assert app["metrics"] is None, "no metrics of its own: the request metrics only"
    assert parsed["hooks"] == {"pre-deploy": None, "post-deploy": None}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({}, "[app] is missing"),
        ({"app": {"wsgi": "app:app"}}, "[app] needs files"),
        ({"app": APP | {"wsgi_app": "x:y"}}, "unknown keys: wsgi_app"),
        ({"app": APP, "schedule": []}, "unknown tables or keys: schedule"),
        ({"app": APP | {"wsgi": "app.wsgi"}}, "app.wsgi must look like"),
        ({"app": APP | {"wsgi": "app:create_app(1)"}}, "app.wsgi must look like"),
        ({"app": APP | {"check": "app.config"}}, "app.check must look like"),
        ({"app": APP | {"metrics": "app.metrics"}}, "app.metrics must look like"),
        ({"app": APP | {"metrics": "app.metrics:collector()"}}, "app.metrics must look like"),
        ({"app": APP | {"metrics": ["app.metrics:collector"]}}, "app.metrics must look like"),
        ({"app": APP | {"files": []}}, "app.files must be a list"),
        ({"app": APP | {"files": ["../secrets"]}}, "inside the app's directory"),
        ({"app": APP | {"static": "/srv/static"}}, "inside the app's directory"),
        ({"app": APP | {"migrate": "  "}}, "app.migrate must be a non-empty command"),
        ({"app": APP | {"worker": 3}}, "app.worker must be a non-empty command"),
        ({"app": APP, "scheduled": {"name": "x"}}, "array of tables"),
        ({"app": APP, "scheduled": [{"name": "x", "command": "y"}]}, "an on_calendar"),
        (
            {"app": APP, "scheduled": [{"name": "Big", "command": "y", "on_calendar": "daily"}]},
            "lowercase letters",
        ),
        (
            {"app": APP, "scheduled": [{"name": "x", "command": "y", "on_calendar": "daily"}] * 2},
            "two scheduled jobs are named 'x'",
        ),
        ({"app": APP | {"worker_check": "true"}}, "checks the worker: declare app.worker too"),
        ({"app": APP, "hooks": {"pre-build": "hooks/x"}}, "[hooks] may name pre-deploy and"),
        ({"app": APP, "hooks": {"pre-deploy": "/usr/bin/true"}}, "inside the app's directory"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(data, says):
    with pytest.raises(manifest.ManifestError) as error:
        manifest.parse(data)
    assert says in str(error.value)


def test_a_missing_or_broken_file_names_itself(tmp_path):
    with pytest.raises(manifest.ManifestError, match=r"flaskstack\.toml is missing"):
        manifest.load(tmp_path)
    (tmp_path / "flaskstack.toml").write_text("[app\n")
    with pytest.raises(manifest.ManifestError, match=r"flaskstack\.toml: "):
        manifest.load(tmp_path)


def test_the_command_line_prints_one_key(tmp_path, capsys):
    (tmp_path / "flaskstack.toml").write_text(
        '[app]\nfiles = ["pkg", "migrations"]\nwsgi = "pkg:create_app()"\n'
    )
    assert manifest.main(["get", "files", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "pkg\nmigrations\n"
    assert manifest.main(["get", "static", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "\n"
    assert manifest.main(["run", "migrate", str(tmp_path)]) == 0, "no migrations: nothing to do"
    assert manifest.main(["get", "nope", str(tmp_path)]) == 2
    assert manifest.main(["show", str(tmp_path / "missing")]) == 1


def test_the_metrics_key_names_the_apps_collector(capsys):
    parsed = manifest.parse({"app": APP | {"metrics": "app.metrics:collector"}})
    assert parsed["app"]["metrics"] == "app.metrics:collector"
    assert manifest.main(["get", "metrics", str(REPO)]) == 0
    assert capsys.readouterr().out == "app.metrics:collector\n", "the blog's RQ queue"
    assert manifest.main(["get", "metrics", str(REPO / "examples/guestbook")]) == 0
    assert capsys.readouterr().out == "\n", "the guestbook declares none"
