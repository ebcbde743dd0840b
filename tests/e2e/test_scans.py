"""The sandbox as an auditor sees it: testssl.sh, sslyze and the Mozilla HTTP Observatory.

tools/scan/scan.sh runs the three scanners once per session (about 90 s, most of it testssl.sh).
Each bar is its own test and reads the scanner's raw output where it can, so a failure names the
scanner, the figure that missed and the scanner's own reasons (from summary.json).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ScanRun:
    exit_status: int
    output: str  # scan.sh's progress and table
    results: Path  # raw scanner output and summary.json
    summary: dict

    def raw(self, name: str) -> dict:
        return json.loads((self.results / name).read_text())

    def testssl_rating(self) -> list[dict]:
        """testssl.sh's rating findings (empty when the scan aborted before rating)."""
        scans = self.raw("testssl.json").get("scanResult") or [{}]
        return scans[0].get("rating", [])

    def reasons(self, scanner: str) -> str:
        """The summariser's explanation of a scanner's result, for assertion messages."""
        verdict = self.summary["scanners"][scanner]
        lines = [f"{verdict['name']}: grade {verdict['grade']}, score {verdict['score']}"]
        lines += [f"  ✘ {problem}" for problem in verdict["problems"]]
        lines += [f"  · {note}" for note in verdict["notes"]]
        return "\n".join(lines)


@pytest.fixture(scope="session")
def scan(sandbox, tmp_path_factory) -> ScanRun:
    results = tmp_path_factory.mktemp("scan")
    # The sandbox fixture says where the site is; pass it on rather than let scan.sh look again.
    argv = [
        str(ROOT / "tools" / "scan" / "scan.sh"), "--out", str(results),
        "--ip", sandbox.edge["ip"], "--ca-cert", sandbox.ca_cert, sandbox.domain,
    ]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    print(output)  # the table, in the test log
    summary_file = results / "summary.json"
    if not summary_file.exists():
        pytest.fail(f"scan.sh wrote no summary (exit status {run.returncode}):\n{output}")
    return ScanRun(run.returncode, output, results, json.loads(summary_file.read_text()))


def test_testssl_overall_grade_is_a_plus_with_score_of_at_least_90(scan):
    rating = {item["id"]: item["finding"] for item in scan.testssl_rating()}
    assert rating.get("overall_grade") == "A+", scan.reasons("testssl")
    assert int(rating["final_score"]) >= 90, scan.reasons("testssl")


def test_testssl_has_no_grade_cap_and_no_warning_beyond_the_test_ca(scan):
    rating = scan.testssl_rating()
    assert rating, scan.reasons("testssl")
    caps = [item["finding"] for item in rating if item["id"].startswith("grade_cap_")]
    assert caps == [], scan.reasons("testssl")
    # Findings of MEDIUM severity or worse, and checks testssl.sh could not run (WARN), less the
    # ones the sandbox's ACME CA causes (listed as notes, with the reason, by the summariser).
    assert scan.summary["scanners"]["testssl"]["problems"] == [], scan.reasons("testssl")


def test_sslyze_finds_the_edge_compliant_with_mozilla_intermediate(scan):
    server = scan.raw("sslyze.json")["server_scan_results"][0]
    assert server["connectivity_status"] == "COMPLETED", server["connectivity_error_trace"]
    verdict = scan.summary["scanners"]["sslyze"]
    assert verdict["grade"] == "compliant", scan.reasons("sslyze")
    assert verdict["problems"] == [], scan.reasons("sslyze")


def test_observatory_grade_is_a_plus_with_score_of_at_least_120(scan):
    report = scan.raw("observatory.json")
    assert "error" not in report, report.get("error")
    assert report["scan"]["grade"] == "A+", scan.reasons("observatory")
    assert report["scan"]["score"] >= 120, scan.reasons("observatory")
    failed = [name for name, test in report["tests"].items() if not test["pass"]]
    assert failed == [], scan.reasons("observatory")


def test_scan_exit_status_is_the_verdict(scan):
    """`make scan` gates on the exit status: 0 exactly when every bar above is met."""
    assert scan.exit_status in (0, 1), scan.output
    assert (scan.exit_status == 0) == scan.summary["passed"], scan.output
