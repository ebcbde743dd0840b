"""The backups' health metrics (ansible/roles/pgbackrest/files/flaskstack-backup-metrics.py) on
what a real sandbox's db host answered: pgBackRest 2.55's `info --output=json`
(tests/fixtures/pgbackrest-report.json), `repo-ls --output=json --recurse` of the stanza's two
paths (tests/fixtures/pgbackrest-repo-ls.json, one listing per path) and pg_stat_archiver.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ansible/roles/pgbackrest/files/flaskstack-backup-metrics.py"
_spec = importlib.util.spec_from_file_location("flaskstack_backup_metrics", SCRIPT)
metrics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(metrics)

FIXTURES = REPO / "tests/fixtures"
# pg_stat_archiver as psql -AtX -F '|' prints it: a primary, never failed (NULL is empty).
ARCHIVER_LINE = "f|1796383749.878616||9|0\n"
MARKER_TIME = 1796300000


@pytest.fixture
def info() -> list:
    return json.loads((FIXTURES / "pgbackrest-report.json").read_text())["repositories"]


@pytest.fixture
def listings() -> dict:
    return json.loads((FIXTURES / "pgbackrest-repo-ls.json").read_text())


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "last-success"
    path.touch()
    os.utime(path, (MARKER_TIME, MARKER_TIME))
    return path


class Host:
    """pgBackRest and psql as the db host answers them, through as_postgres; None: they fail."""

    def __init__(self, info, listings, archiver=ARCHIVER_LINE):
        self.answers = {"info": info, "repo-ls": listings, "psql": archiver}
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[0] == metrics.PSQL:
            said = self.answers["psql"]
        elif "info" in argv:
            said = self.answers["info"]
            said = json.dumps(said) if said is not None else None
        else:
            listings = self.answers["repo-ls"]
            said = json.dumps(listings[argv[-1]]) if listings is not None else None
        if said is None:
            error = "ERROR: [039]: HTTP request failed with 503 (Service Unavailable)"
            return subprocess.CompletedProcess(argv, 39, "", f"P00  {error}\n")
        return subprocess.CompletedProcess(argv, 0, said, "")


def rendered(monkeypatch, host: Host, marker: Path) -> str:
    monkeypatch.setattr(metrics, "as_postgres", host)
    return metrics.render("flaskstack", metrics.collect("flaskstack", 5432, marker))


def sample_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_a_healthy_repository_gives_every_metric(monkeypatch, info, listings, marker):
    text = rendered(monkeypatch, Host(info, listings), marker)
    p = "flaskstack_pgbackrest_"
    assert sample_lines(text) == [
        f'{p}scrape_success{{stanza="flaskstack"}} 1',
        f'{p}source_up{{stanza="flaskstack",source="info"}} 1',
        f'{p}source_up{{stanza="flaskstack",source="repo_ls"}} 1',
        f'{p}source_up{{stanza="flaskstack",source="postgres"}} 1',
        f'{p}stanza_status{{stanza="flaskstack"}} 0',
        f'{p}backups{{stanza="flaskstack",type="full"}} 1',
        f'{p}backups{{stanza="flaskstack",type="diff"}} 1',
        f'{p}backups{{stanza="flaskstack",type="incr"}} 0',
        f'{p}last_backup_timestamp_seconds{{stanza="flaskstack",type="full"}} 1796383408',
        f'{p}last_backup_timestamp_seconds{{stanza="flaskstack",type="diff"}} 1796383749',
        f'{p}last_backup_duration_seconds{{stanza="flaskstack",type="full"}} 6',
        f'{p}last_backup_duration_seconds{{stanza="flaskstack",type="diff"}} 1',
        f'{p}last_backup_size_bytes{{stanza="flaskstack",type="full"}} 31009709',
        f'{p}last_backup_size_bytes{{stanza="flaskstack",type="diff"}} 31452077',
        f'{p}last_backup_repository_delta_bytes{{stanza="flaskstack",type="full"}} 3714832',
        f'{p}last_backup_repository_delta_bytes{{stanza="flaskstack",type="diff"}} 273056',
        # The end of the oldest backup, as `make backups` reads it (deploy/backups_report.py).
        f'{p}recovery_window_start_timestamp_seconds{{stanza="flaskstack"}} 1796383408',
        # The files of both listings: WAL 729600, backups 5233424 (paths are not counted).
        f'{p}repository_size_bytes{{stanza="flaskstack"}} 5963024',
        f'{p}postgres_in_recovery{{stanza="flaskstack"}} 0',
        f'{p}archiver_last_archived_timestamp_seconds{{stanza="flaskstack"}} 1796383749.878616',
        f'{p}archiver_archived_total{{stanza="flaskstack"}} 9',
        f'{p}archiver_failed_total{{stanza="flaskstack"}} 0',
        f'{p}restore_check_last_success_timestamp_seconds{{stanza="flaskstack"}} 1796300000',
    ]
    lines = text.splitlines()
    assert lines[:2] == [
        f"# HELP {p}scrape_success 1 when pgBackRest's info, its repository listing and Postgres"
        " all answered, else 0.",
        f"# TYPE {p}scrape_success gauge",
    ]
    assert f"# TYPE {p}archiver_failed_total counter" in lines
    assert_valid_exposition(text)


def test_the_commands_run_as_postgres(monkeypatch, info, listings, marker):
    host = Host(info, listings)
    rendered(monkeypatch, host, marker)
    assert host.calls == [
        ["/usr/bin/pgbackrest", "--stanza=flaskstack", "--output=json", "info"],
        ["/usr/bin/pgbackrest", "--stanza=flaskstack", "--output=json", "repo-ls", "--recurse",
         "archive/flaskstack"],
        ["/usr/bin/pgbackrest", "--stanza=flaskstack", "--output=json", "repo-ls", "--recurse",
         "backup/flaskstack"],
        ["/usr/bin/psql", "-h", "/run/postgresql", "-p", "5432", "-d", "postgres", "-AtX",
         "-F", "|", "-c", metrics.ARCHIVER_SQL],
    ]  # fmt: skip
    assert "extract(epoch from last_archived_time)" in metrics.ARCHIVER_SQL


def test_a_source_that_fails_is_a_metric_not_a_crash(monkeypatch, info, listings, marker, capsys):
    host = Host(None, listings)
    lines = sample_lines(rendered(monkeypatch, host, marker))
    assert lines[:4] == [
        'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 0',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="info"} 0',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="repo_ls"} 1',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="postgres"} 1',
    ]
    assert not any(re.match(r"flaskstack_pgbackrest_(stanza_status|backups|last_backup)", line)
                   for line in lines), lines  # fmt: skip
    assert 'flaskstack_pgbackrest_repository_size_bytes{stanza="flaskstack"} 5963024' in lines
    assert "info: P00  ERROR: [039]: HTTP request failed with 503" in capsys.readouterr().err


def test_psql_says_why_it_did_not_connect():
    said = (
        'psql: error: connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed:'
        " No such file or directory\n"
        "\tIs the server running locally and accepting connections on that socket?\n"
    )
    reason = metrics.last_error(subprocess.CompletedProcess([], 2, "", said))
    assert reason.startswith("psql: error: connection to server on socket")


def test_nothing_answering_still_gives_a_valid_file(monkeypatch, tmp_path):
    def broken(argv):
        raise subprocess.TimeoutExpired(argv, metrics.TIMEOUT)

    monkeypatch.setattr(metrics, "as_postgres", broken)
    text = metrics.render("flaskstack", metrics.collect("flaskstack", 5432, tmp_path / "none"))
    assert sample_lines(text) == [
        'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 0',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="info"} 0',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="repo_ls"} 0',
        'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="postgres"} 0',
    ]
    assert_valid_exposition(text)


@pytest.mark.parametrize(
    "said",
    [
        "not JSON at all",
        json.dumps([]),  # no entry for the stanza
        json.dumps([{"name": "other", "status": {"code": 0}}]),
        json.dumps([{"name": "flaskstack"}]),  # no status
    ],
)
def test_an_info_answer_without_the_stanza_is_a_failed_source(monkeypatch, listings, said, marker):
    host = Host(None, listings)
    host.answers["info"] = None
    monkeypatch.setattr(
        metrics,
        "as_postgres",
        lambda argv: subprocess.CompletedProcess(argv, 0, said, "") if "info" in argv
        else host(argv),
    )  # fmt: skip
    lines = sample_lines(metrics.render("flaskstack", metrics.collect("flaskstack", 5432, marker)))
    assert 'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="info"} 0' in lines
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 0' in lines


def test_an_empty_repository_has_no_backup_to_date(monkeypatch, info, marker):
    empty = copy.deepcopy(info)
    empty[0]["backup"] = []
    empty[0]["status"] = {"code": 2, "message": "no valid backups"}
    just_created = {".": {"type": "path"}}
    host = Host(empty, {"archive/flaskstack": just_created, "backup/flaskstack": just_created})
    text = rendered(monkeypatch, host, marker)
    lines = sample_lines(text)
    assert lines[4:9] == [
        'flaskstack_pgbackrest_stanza_status{stanza="flaskstack"} 2',
        'flaskstack_pgbackrest_backups{stanza="flaskstack",type="full"} 0',
        'flaskstack_pgbackrest_backups{stanza="flaskstack",type="diff"} 0',
        'flaskstack_pgbackrest_backups{stanza="flaskstack",type="incr"} 0',
        'flaskstack_pgbackrest_repository_size_bytes{stanza="flaskstack"} 0',
    ]
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 1' in lines
    assert not any("last_backup" in line or "recovery_window" in line for line in lines)
    assert_valid_exposition(text)


def test_the_newest_backup_of_each_type_counts(info):
    entry = info[0]
    incremental = copy.deepcopy(entry["backup"][1])
    incremental.update(type="incr", timestamp={"start": 1796384000, "stop": 1796384012})
    incremental["info"] = {"size": 31500000}  # no repository delta: left out
    older_full = copy.deepcopy(entry["backup"][0])
    older_full["timestamp"] = {"start": 1796300000, "stop": 1796300030}
    entry["backup"] = [older_full, *entry["backup"], incremental, {"type": "full"}]
    samples = metrics.info_samples(info, "flaskstack")
    got = {(one.name, dict(one.labels).get("type")): one.value for one in samples}
    assert got[("backups", "full")] == 2, "a backup without its times is not counted"
    assert got[("last_backup_timestamp_seconds", "full")] == 1796383408
    assert got[("last_backup_timestamp_seconds", "incr")] == 1796384012
    assert got[("last_backup_duration_seconds", "incr")] == 12
    assert got[("last_backup_size_bytes", "incr")] == 31500000
    assert ("last_backup_repository_delta_bytes", "incr") not in got
    assert got[("recovery_window_start_timestamp_seconds", None)] == 1796300030


def test_repo_ls_counts_files_only_and_tolerates_missing_keys():
    listing = {
        ".": {"type": "path"},
        "latest": {"type": "link", "destination": "20261204-112322F"},  # posix repositories
        "20261204-112322F": {"type": "path"},
        "20261204-112322F/backup.manifest": {"type": "file", "size": 296128, "time": 1796383408},
        "no-size": {"type": "file", "time": 1796383408},
        "no-type": {"size": 5},
        "odd": "not an object",
    }
    assert metrics.listed_bytes(listing) == 296128
    assert metrics.listed_bytes({}) == 0
    with pytest.raises(metrics.SourceError):
        metrics.listed_bytes(["not", "an", "object"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "f|1796383749.878616|1796383700.5|9|3",
            [
                ("postgres_in_recovery", 0),
                ("archiver_last_archived_timestamp_seconds", 1796383749.878616),
                ("archiver_last_failed_timestamp_seconds", 1796383700.5),
                ("archiver_archived_total", 9),
                ("archiver_failed_total", 3),
            ],
        ),
        # Never archived yet (a new cluster): NULL times are left out.
        (
            "f|||0|0",
            [
                ("postgres_in_recovery", 0),
                ("archiver_archived_total", 0),
                ("archiver_failed_total", 0),
            ],
        ),
        # Restoring: its archiver says nothing of the primary's archiving.
        ("t|1796383749.878616||9|0", [("postgres_in_recovery", 1)]),
    ],
)
def test_archiver_line(line, expected):
    assert [(one.name, one.value) for one in metrics.archiver_samples(line)] == expected


@pytest.mark.parametrize("line", ["", "psql: error", "f|x||9|0", "f|1|2|3"])
def test_an_unexpected_archiver_line_is_a_failed_source(line):
    with pytest.raises(metrics.SourceError):
        metrics.archiver_samples(line)


def test_postgres_down_is_a_failed_source(monkeypatch, info, listings, marker):
    host = Host(info, listings, archiver=None)
    lines = sample_lines(rendered(monkeypatch, host, marker))
    assert 'flaskstack_pgbackrest_source_up{stanza="flaskstack",source="postgres"} 0' in lines
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 0' in lines
    assert not any("archiver" in line or "in_recovery" in line for line in lines)


def test_without_a_restore_check_marker_its_metric_is_absent(monkeypatch, info, listings, tmp_path):
    text = rendered(monkeypatch, Host(info, listings), tmp_path / "missing")
    assert "restore_check" not in text
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 1' in text


def test_main_writes_the_file_atomically(monkeypatch, info, listings, marker, tmp_path):
    monkeypatch.setattr(metrics, "as_postgres", Host(info, listings))
    monkeypatch.setattr(metrics.os, "geteuid", lambda: 0)
    output = tmp_path / "node-exporter" / "flaskstack_pgbackrest.prom"
    argv = ["--stanza", "flaskstack", "--port", "5432", "--output", str(output),
            "--restore-check-marker", str(marker)]  # fmt: skip
    assert metrics.main(argv) == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o644
    assert stat.S_IMODE(output.parent.stat().st_mode) == 0o755
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 1' in output.read_text()
    # Again, with pgBackRest failing: replaced, exit 0, no temporary file left.
    monkeypatch.setattr(metrics, "as_postgres", Host(None, None, None))
    assert metrics.main(argv) == 0
    assert os.listdir(output.parent) == ["flaskstack_pgbackrest.prom"]
    assert 'flaskstack_pgbackrest_scrape_success{stanza="flaskstack"} 0' in output.read_text()
    assert_valid_exposition(output.read_text())


@pytest.mark.parametrize(
    "argv",
    [[], ["--stanza", "a/b"], ["--stanza", "flaskstack", "--port", "x"], ["--stanza"]],
)
def test_bad_usage_exits_2(monkeypatch, argv):
    monkeypatch.setattr(metrics.os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit) as exited:
        metrics.main(argv)
    assert exited.value.code == 2


def test_it_must_run_as_root(monkeypatch):
    monkeypatch.setattr(metrics.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exited:
        metrics.main(["--stanza", "flaskstack"])
    assert exited.value.code == 2


def test_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="typo"):
        metrics.render("flaskstack", [metrics.sample("typo", 1)])


# Prometheus' text exposition format, version 0.0.4.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
VALUE = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN"
SAMPLE = re.compile(
    rf'(?P<name>{NAME})\{{[a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*"'
    rf'(?:,[a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*")*\}} (?:{VALUE})'
)


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    helped: set[str] = set()
    finished: set[str] = set()  # families whose samples are over: they must not come back
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = re.fullmatch(rf"# HELP ({NAME}) \S.*", line).group(1)
            assert name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, kind = re.fullmatch(rf"# TYPE ({NAME}) (counter|gauge)", line).groups()
            assert name in helped and name not in typed, line
            typed[name] = kind
        else:
            found = SAMPLE.fullmatch(line)
            assert found, f"not a sample line: {line!r}"
            name = found.group("name")
            assert name.startswith("flaskstack_pgbackrest_"), line
            assert name in typed, f"{name} has no TYPE before its samples"
            assert typed[name] == "gauge" or name.endswith("_total"), line
            assert name not in finished, f"{name}'s samples are not together"
            assert 'stanza="flaskstack"' in line, line
            if current != name and current is not None:
                finished.add(current)
            current = name
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return
    families = list(text_string_to_metric_families(text))
    assert {family.name for family in families} == {name.removesuffix("_total") for name in typed}
