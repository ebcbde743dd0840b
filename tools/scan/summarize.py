"""Judge the three audit scanners' raw results against the stack's bar, as one table and one JSON.

tools/scan/scan.sh runs the scanners into a results directory; this reads what they wrote there
(testssl.json, sslyze.json + sslyze.txt, observatory.json), prints the table with the details
that explain any miss, writes summary.json beside them, and exits 0 only when every bar is met.
Standard library only, so any python3 runs it.

The bars (issue 4):
  testssl.sh 3.2   overall grade A+, final score >= 90, no grade cap or grade warning, no
                   finding of MEDIUM severity or worse and no check it could not run (WARN),
                   except findings that a trusted test CA (--ca-cert, the sandbox's Pebble) causes
  sslyze           compliant with Mozilla's "intermediate" TLS configuration
  HTTP Observatory grade A+ with a score >= 120
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

TESTSSL_MIN_SCORE = 90
OBSERVATORY_MIN_SCORE = 120

# testssl.sh severities that count as a problem with the target. LOW and INFO are advice, OK is
# good; WARN means testssl could not test something, which hides a result, so it counts too.
TESTSSL_PROBLEM_SEVERITIES = ("MEDIUM", "HIGH", "CRITICAL", "WARN")

# Findings that come from the certificate a test CA issued, not from the edge's configuration.
# They count as notes when a CA was given to trust (--ca-cert: the sandbox's Pebble), as problems
# otherwise: a publicly trusted certificate must not have them.
TESTSSL_TEST_CA_FINDINGS = {
    "cert_revocation": "Pebble puts neither a CRL nor an OCSP URL in the certificates it "
    "issues (Let's Encrypt's carry a CRL URL)",
}

# Checks whose WARN "connect problem" is a race in testssl.sh itself, not a property of the
# target: it saves the session with `s_client -sess_out </dev/null`, which often exits before a
# TLS 1.3 server's NewSessionTicket (sent after the handshake) arrives, more often on a loaded
# machine (testssl.sh issue #1152). Resumption is proven independently by the e2e test
# tests/e2e/test_edge.py::test_tls_sessions_resume, so only this exact WARN is a note.
TESTSSL_SCANNER_RACES = {
    "sessionresumption_ticket": "connect problem",
    "sessionresumption_ID": "connect problem",
}  # check id → the words of its WARN finding


@dataclass
class Verdict:
    """One scanner's result judged against its bar."""

    scanner: str
    name: str
    grade: str | None
    score: int | None
    bar: str
    passed: bool
    problems: list[str] = field(default_factory=list)  # why the bar was missed
    notes: list[str] = field(default_factory=list)  # context that did not count against it
    raw: list[str] = field(default_factory=list)  # the scanner's own output files


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def start_verdict(results: Path, key: str, tool: str, bar: str) -> tuple[Verdict, dict | None]:
    """A scanner's verdict, not passed yet, and its JSON report (<key>.json), or None with the
    problem noted when the scanner wrote none (its output is in <key>.log or <key>.txt)."""
    log = "sslyze.txt" if key == "sslyze" else f"{key}.log"
    verdict = Verdict(key, tool, None, None, bar, False, raw=[f"{key}.json", log])
    report = read_json(results / f"{key}.json")
    if report is None:
        verdict.problems.append(f"{tool} wrote no readable JSON: see {log}")
    return verdict, report


def testssl_verdict(results: Path, test_ca: bool) -> Verdict:
    bar = f"A+, score ≥ {TESTSSL_MIN_SCORE}, no grade cap, no warnings"
    verdict, report = start_verdict(results, "testssl", "testssl.sh", bar)
    if report is None:
        return verdict
    verdict.name = f"testssl.sh {report.get('version', '').strip()}".strip()
    for problem in report.get("clientProblem1", []):
        # Problems of the scanning machine (e.g. no GOST engine), not of the target.
        verdict.notes.append(f"scanner: {problem['finding']}")

    # scanResult holds one object per scanned host, or a bare finding when the scan aborted.
    scans = report.get("scanResult") or []
    aborted = [item for item in scans if "severity" in item]
    if aborted or not scans:
        verdict.problems += [f"{item['id']}: {item['finding']}" for item in aborted]
        verdict.problems = verdict.problems or ["no scan result (see testssl.log)"]
        return verdict
    scan = scans[0]
    rating = {item["id"]: item["finding"] for item in scan.get("rating", [])}
    verdict.grade = rating.get("overall_grade")
    if rating.get("final_score", "").isdigit():
        verdict.score = int(rating["final_score"])

    caps = [text for key, text in rating.items() if key.startswith("grade_cap_reason_")]
    warnings = [text for key, text in rating.items() if key.startswith("grade_cap_warning_")]
    verdict.problems += [f"grade cap: {text}" for text in caps]
    verdict.problems += [f"grade warning: {text}" for text in warnings]

    for section, findings in scan.items():
        if not isinstance(findings, list) or section == "rating":
            continue
        for finding in findings:
            severity = finding.get("severity")
            if severity not in TESTSSL_PROBLEM_SEVERITIES:
                continue
            check = finding["id"].split(" ")[0]  # "cert_revocation <hostCert#1>" → cert_revocation
            line = f"{finding['id']} ({severity}): {finding['finding']}"
            race = TESTSSL_SCANNER_RACES.get(check) if severity == "WARN" else None
            if test_ca and check in TESTSSL_TEST_CA_FINDINGS:
                reason = TESTSSL_TEST_CA_FINDINGS[check]
                verdict.notes.append(f"{line}: not counted, the test CA's doing: {reason}")
            elif race and race in finding["finding"]:
                verdict.notes.append(f"{line}: not counted, a race in testssl.sh's own client")
            else:
                verdict.problems.append(line)

    if verdict.grade is None:
        verdict.problems.insert(0, "no overall grade in the result (rating did not run)")
    elif verdict.grade != "A+":
        verdict.problems.insert(0, f"overall grade {verdict.grade}, not A+")
    if verdict.score is None:
        verdict.problems.insert(0, "no final score in the result")
    elif verdict.score < TESTSSL_MIN_SCORE:
        verdict.problems.insert(0, f"final score {verdict.score} < {TESTSSL_MIN_SCORE}")
    verdict.passed = not verdict.problems
    return verdict


def sslyze_verdict(results: Path) -> Verdict:
    bar = 'Mozilla "intermediate" compliant'
    verdict, report = start_verdict(results, "sslyze", "sslyze", bar)
    if report is None:
        return verdict
    verdict.name = f"sslyze {report.get('sslyze_version', '')}".strip()
    for invalid in report.get("invalid_server_strings", []):
        verdict.problems.append(
            f"invalid target {invalid.get('server_string')}: {invalid.get('error_message')}"
        )
    servers = report.get("server_scan_results") or []
    for server in servers:
        if server.get("connectivity_status") != "COMPLETED":
            trace = (server.get("connectivity_error_trace") or "").strip().splitlines()
            verdict.problems.append(f"could not connect: {trace[-1] if trace else 'unknown error'}")
    if verdict.problems or not servers:
        verdict.problems = verdict.problems or ["no server was scanned"]
        return verdict

    # The compliance check runs only in the CLI and reaches only its console output: a line
    # "HOST:PORT: OK - Compliant." or "…: FAILED - Not compliant." followed by "* criterion: why".
    console = (results / "sslyze.txt").read_text(errors="replace")
    section = console.partition("COMPLIANCE AGAINST")[2]
    if re.search(r": OK - Compliant\.", section):
        verdict.grade = "compliant"
    elif re.search(r": FAILED - Not compliant\.", section):
        verdict.grade = "not compliant"
        verdict.problems += re.findall(r"^\s+\* (.+)$", section, flags=re.MULTILINE)
    else:
        verdict.problems.append("no compliance result in sslyze's output: see sslyze.txt")
    verdict.passed = verdict.grade == "compliant" and not verdict.problems
    return verdict


def observatory_verdict(results: Path) -> Verdict:
    bar = f"A+, score ≥ {OBSERVATORY_MIN_SCORE}"
    verdict, report = start_verdict(results, "observatory", "HTTP Observatory", bar)
    version = read_json(results / "observatory.version.json") or {}
    if version.get("version"):
        verdict.name = f"HTTP Observatory {version['version']}"
    if report is None:
        return verdict
    if report.get("error"):
        verdict.problems.append(f"scan failed: {report['error']}")
        return verdict
    scan = report["scan"]
    verdict.grade, verdict.score = scan.get("grade"), scan.get("score")
    if verdict.grade != "A+":
        verdict.problems.append(f"grade {verdict.grade}, not A+")
    if verdict.score is None or verdict.score < OBSERVATORY_MIN_SCORE:
        verdict.problems.append(f"score {verdict.score} < {OBSERVATORY_MIN_SCORE}")
    for name, test in report.get("tests", {}).items():
        if not test.get("pass"):
            verdict.problems.append(
                f"{name}: {test.get('result')} (expected {test.get('expectation')}, "
                f"{test.get('scoreModifier'):+d})"
            )
        elif test.get("scoreModifier", 0) < 0:
            verdict.notes.append(f"{name}: {test.get('result')} ({test['scoreModifier']:+d})")
    verdict.passed = not verdict.problems
    return verdict


def render(verdicts: list[Verdict], target: str) -> str:
    header = ("scanner", "grade", "score", "bar", "verdict")
    rows = [
        (v.name, v.grade or "-", "-" if v.score is None else str(v.score), v.bar,
         "pass" if v.passed else "FAIL")
        for v in verdicts
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [f"Audit scan of {target}", "", line(header), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    for v in verdicts:
        if v.problems or v.notes:
            out += ["", f"{v.name}:"]
            out += [f"  ✘ {text}" for text in v.problems]
            out += [f"  · {text}" for text in v.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="directory the scanners wrote into")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--ip", help="the address scanned, when not the domain's DNS answer")
    parser.add_argument("--ca-cert", help="the CA trusted instead of the public ones (sandbox)")
    args = parser.parse_args(argv)

    test_ca = bool(args.ca_cert)
    verdicts = [testssl_verdict(args.results, test_ca), sslyze_verdict(args.results),
                observatory_verdict(args.results)]  # fmt: skip
    target = args.domain + (f" ({args.ip}, trusting {args.ca_cert})" if args.ip else "")
    passed = all(v.passed for v in verdicts)
    summary = {
        "target": {"domain": args.domain, "ip": args.ip, "ca_cert": args.ca_cert},
        "passed": passed,
        "scanners": {v.scanner: asdict(v) for v in verdicts},
    }
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(render(verdicts, target))
    print(f"\n{'All three bars met' if passed else 'Bar missed'}; "
          f"details in {args.results / 'summary.json'}")  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
