"""`make backups`' report (deploy/backups_report.py) on what a real sandbox's db host answered:
pgBackRest 2.55's `info --output=json` and pg_stat_archiver (tests/fixtures/pgbackrest-report.json).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from deploy.backups_report import report

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pgbackrest-report.json"


@pytest.fixture
def data() -> dict:
    return json.loads(FIXTURE.read_text())


def test_a_healthy_repository_lists_each_backup_and_the_recovery_window(data):
    lines, healthy = report(data)
    text = "\n".join(lines)
    assert healthy, text
    assert lines[0] == "stanza flaskstack (aes-256-cbc, from host1): ok"
    assert "20261204-112322F                   full  2026-12-04 11:23:22 UTC" in text
    assert "20261204-112322F_20261204-112908D  diff  2026-12-04 11:29:08 UTC" in text
    assert "newest archived WAL: 000000010000000000000009, 2 s ago" in text
    # From the end of the oldest backup (its first consistent point) to the newest archived WAL.
    assert "recovery window: 2026-12-04 11:23:28 UTC to 2026-12-04 11:29:09 UTC" in text


def test_failing_archiving_is_unhealthy_and_says_where_to_look(data):
    failing = copy.deepcopy(data)
    failing["archiver"].update(
        failed_count=3,
        last_failed_wal="00000001000000000000000A",
        last_failed_time=data["archiver"]["now"] - 1,  # after the last success
    )
    lines, healthy = report(failing)
    assert not healthy
    assert any("WAL ARCHIVING FAILING: 00000001000000000000000A failed 1 s ago" in line
               for line in lines), lines  # fmt: skip


def test_a_repository_without_backups_is_unhealthy(data):
    empty = copy.deepcopy(data)
    empty["repositories"][0]["backup"] = []
    empty["repositories"][0]["status"] = {"code": 2, "message": "no valid backups"}
    lines, healthy = report(empty)
    assert not healthy
    assert lines[0].endswith(": no valid backups")
    assert not any("recovery window" in line for line in lines)
