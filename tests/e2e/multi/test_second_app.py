"""A second app on the same stack (issue 20): examples/guestbook, deployed by the same roles with
`make deploy APP=examples/guestbook`, replaces the blog on the HA sandbox (several hosts of each
kind). Then a second release of it switches under load, and `make rollback` goes back, each with
no failed request and no lost write. The stage's host audit runs after this module.

The guestbook has its own database (postgres_app_database, as its inventory would say): its
Flask-Migrate history is not the blog's. Replacing one app by another is not a zero-downtime
operation (the blog's database access ends with the switch of pg_hba), so only the guestbook's
own release switches run under load.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_faults import FaultTable, deploy, deploy_failure, deploy_records, live_release

from support.load import GuestbookLoad

ROOT = Path(__file__).resolve().parents[3]
GUESTBOOK = ROOT / "examples" / "guestbook"
DATABASE = "guestbook"
# What an inventory of the guestbook would set.
INVENTORY_VARS = ("-e", f"postgres_app_database={DATABASE}")
WRITERS = 4


@pytest.fixture(scope="module")
def releases() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def table(sandbox):
    table = FaultTable()
    yield table
    table.report(sandbox, "the second app (examples/guestbook) under load", mode="a")


@pytest.fixture
def load(sandbox) -> GuestbookLoad:
    return GuestbookLoad(sandbox.url, sandbox.ca_cert, writers=WRITERS)


def entries_in_postgres(sandbox, tag: str) -> set[str]:
    db = sandbox.primary_db_host()
    query = f"COPY (SELECT message FROM entries WHERE message LIKE 'load {tag} %') TO STDOUT"  # noqa: S608
    result = sandbox.ssh(db, f'sudo -u postgres psql -X -q -d {DATABASE} -c "{query}"')
    return set(result.stdout.splitlines())


def check_writes(sandbox, load: GuestbookLoad) -> int:
    """Every acknowledged signature is in the guestbook's database; returns how many."""
    assert load.acknowledged, "the load acknowledged no write at all"
    stored = entries_in_postgres(sandbox, load.tag)
    missing = [w for w in load.acknowledged if w.body not in stored]
    assert missing == [], f"{len(missing)} acknowledged writes missing: {missing[:3]}"
    return len(load.acknowledged)


def variant(tmp_path: Path, marker: str, hooks: dict[str, str] | None = None) -> Path:
    """The guestbook with one visible change (a marker in every page) and the hooks given (name:
    shell script), as its own git work tree: a release holds an app's tracked files."""
    tree = tmp_path / "guestbook"
    shutil.copytree(GUESTBOOK, tree, ignore=shutil.ignore_patterns("__pycache__"))
    base = tree / "guestbook" / "templates" / "base.html"
    base.write_text(base.read_text().replace("</main>", f"<!-- {marker} --></main>", 1))
    assert marker in base.read_text()
    if hooks:
        lines = [f'{name} = "hooks/{name}"' for name in hooks]
        with (tree / "flaskstack.toml").open("a") as manifest:
            manifest.write("\n[hooks]\n" + "\n".join(lines) + "\n")
        (tree / "hooks").mkdir()
        for name, script in hooks.items():
            (tree / "hooks" / name).write_text(f"#!/bin/sh\n{script}\n")
            (tree / "hooks" / name).chmod(0o755)
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "-C", str(tree)]
    for args in (["init", "--quiet"], ["add", "."], ["commit", "--quiet", "-m", marker]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return tree


def home_page(sandbox, browser) -> str:
    page = browser.get(f"{sandbox.url}/", timeout=15)
    assert page.status_code == 200, page.text[:500]
    return page.text


def anonymous_home_pages(sandbox, browser, count: int) -> list[tuple[str, str]]:
    """(X-Cache-Status, <title>) of the home page, asked for by new visitors."""
    pages = []
    for _ in range(count):
        browser.cookies.clear()
        page = browser.get(f"{sandbox.url}/", timeout=15)
        assert page.status_code == 200, page.text[:500]
        title = page.text.partition("<title>")[2].partition("</title>")[0]
        pages.append((page.headers.get("X-Cache-Status", ""), title))
    return pages


def test_the_guestbook_replaces_the_blog_through_the_same_roles(sandbox, browser, releases):
    blog = live_release(sandbox)
    # The edge's microcache holds the blog's home page, and keeps serving it while it asks the
    # app for a new one; the guestbook's page may not be stored (it sets a cookie), so it would
    # never replace the blog's copy: the deploy empties the cache once the app hosts switched.
    cached = anonymous_home_pages(sandbox, browser, 5)
    assert any(status == "HIT" for status, _ in cached), cached
    result = deploy(sandbox, *INVENTORY_VARS, app=str(GUESTBOOK))
    assert result.returncode == 0, deploy_failure(result)
    releases["first"] = live_release(sandbox)
    assert releases["first"] != blog

    served = anonymous_home_pages(sandbox, browser, 5)
    print(f"anonymous home pages after the replacement: {served}")
    assert all(title == "Guestbook" for _, title in served), served
    for host in sandbox.hosts_in("app"):
        record = json.loads(sandbox.ssh(host, "cat /srv/flaskstack/current/RELEASE.json").stdout)
        assert record["app"] == str(GUESTBOOK), (host["name"], record)
        # It declares no worker and no scheduled job: none runs, on any host.
        worker = sandbox.ssh(
            host, "systemctl is-enabled flaskstack-worker.service; "
            "systemctl is-active flaskstack-worker.service", check=False,
        ).stdout.split()  # fmt: skip
        assert worker == ["disabled", "inactive"], (host["name"], worker)
        timers = sandbox.ssh(host, "systemctl list-units --all --plain --no-legend "
                             "'flaskstack-job-*'").stdout  # fmt: skip
        assert timers.strip() == "", (host["name"], timers)

    # Its static files keep their names: the edge serves them for an hour, not a year.
    css = browser.get(f"{sandbox.url}/static/guestbook.css", timeout=15)
    assert css.status_code == 200 and "body" in css.text
    assert css.headers["Cache-Control"] == "public, max-age=3600"

    # A visitor signs it (CSRF-protected form, Post/Redirect/Get).
    with GuestbookLoad(sandbox.url, sandbox.ca_cert, writers=1) as load:
        pass
    assert load.acknowledged and not load.failed, load.summary()
    assert entries_in_postgres(sandbox, load.tag) == {w.body for w in load.acknowledged}


def test_a_second_release_of_the_guestbook_switches_with_no_failed_request(
    sandbox, browser, load, table, releases, tmp_path
):
    marker = f"guestbook-marker-{load.tag}"
    # Its hooks (docs/app-contract.md) run on this machine, the one that deploys.
    ran = tmp_path / "hooks-ran"
    record = f'echo "$FLASKSTACK_HOOK $FLASKSTACK_RELEASE $FLASKSTACK_PERFORMER" >> {ran}'
    app = variant(tmp_path, marker, hooks={"pre-deploy": record, "post-deploy": record})
    with load:
        result = deploy(sandbox, *INVENTORY_VARS, app=str(app))
    assert result.returncode == 0, deploy_failure(result)
    table.add("guestbook: deploy its release 2", load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    releases["second"] = live_release(sandbox)
    assert releases["second"] != releases["first"]
    assert marker in home_page(sandbox, browser)
    deployed = deploy_records(sandbox)[-1]
    assert deployed["release"] == releases["second"] and deployed["previous"] == releases["first"]
    hooks = [line.split(" ", 2) for line in ran.read_text().splitlines()]
    assert hooks == [
        ["pre-deploy", releases["second"], deployed["by"]],
        ["post-deploy", releases["second"], deployed["by"]],
    ]


def test_a_failing_pre_deploy_hook_stops_the_deploy_before_any_host(sandbox, releases, tmp_path):
    records = deploy_records(sandbox)
    app = variant(tmp_path, "never-deployed", hooks={"pre-deploy": "echo 'CI is red' >&2; exit 3"})
    result = deploy(sandbox, *INVENTORY_VARS, app=str(app))
    assert result.returncode != 0
    assert "CI is red" in result.stderr
    assert "pre-deploy hook failed: nothing was deployed" in result.stderr
    assert "PLAY [" not in result.stdout, "no host was touched"
    assert live_release(sandbox) == releases["second"] and deploy_records(sandbox) == records


def test_rollback_takes_the_guestbook_back_with_no_failed_request(
    sandbox, browser, load, table, releases
):
    with load:
        result = deploy(sandbox, *INVENTORY_VARS, playbook="ansible/rollback.yml")
    assert result.returncode == 0, deploy_failure(result)
    table.add("guestbook: make rollback", load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    assert live_release(sandbox) == releases["first"]
    assert "guestbook-marker-" not in home_page(sandbox, browser)
