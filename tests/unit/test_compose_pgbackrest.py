"""Compose's pgbackrest service (deploy/compose/pgbackrest.py): which backup is due, and the
restore's refusal of a time without its zone. The backups and the restore themselves run in the
Compose stage (tests/compose/test_backups.py), against real pgBackRest and Postgres."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/compose/pgbackrest.py"
_spec = importlib.util.spec_from_file_location("compose_pgbackrest", SCRIPT)
service = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service)

HOUR = 3600
NOW = 1_800_000_000
FULL, DIFF = 168 * HOUR, 24 * HOUR


def stanza(*backups: tuple[str, float]) -> dict:
    """pgbackrest info's stanza with backups of (type, hours before NOW when it stopped)."""
    return {
        "backup": [
            {"type": kind, "timestamp": {"start": NOW - age * HOUR - 60, "stop": NOW - age * HOUR}}
            for kind, age in backups
        ]
    }


@pytest.mark.parametrize(
    ("backups", "due"),
    [
        ((), "full"),
        ((("full", 1),), None),
        ((("full", 25),), "diff"),
        ((("full", 100), ("diff", 2)), None),
        ((("full", 100), ("diff", 30)), "diff"),
        ((("full", 168), ("diff", 1)), "full"),
        # Only differentials left (the full one expired by hand): a full one.
        ((("diff", 1),), "full"),
    ],
)
def test_the_due_backup_follows_the_newest_full_and_the_newest_of_any_type(backups, due):
    assert service.due_backup(stanza(*backups), NOW, FULL, DIFF) == due


def test_a_time_without_its_zone_is_refused_before_anything_runs():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "restore", "--time", "2026-12-02 10:14:00"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs its time zone" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "a week"])
def test_an_interval_that_is_not_a_positive_number_of_hours_is_refused(monkeypatch, value):
    monkeypatch.setenv("BACKUP_FULL_EVERY_HOURS", value)
    with pytest.raises(SystemExit, match="BACKUP_FULL_EVERY_HOURS"):
        service.hours("BACKUP_FULL_EVERY_HOURS", 168)
