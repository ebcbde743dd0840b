"""The edge's latency and status metrics: mtail's program (roles/exporters/files/
flaskstack-edge.mtail) run by trixie's mtail (the hosts' version, unpacked by make's
deps step) over lines written in nginx's own log_format, read from the template: a
change to the format that the program no longer matches fails here, not silently in production.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "ansible/roles/exporters/files/flaskstack-edge.mtail"
TEMPLATE = ROOT / "nginx/templates/flaskstack-https.conf.template"
MTAIL = Path("/var/cache/flaskstack-tools/monitoring/usr/bin/mtail")


def log_format() -> str:
    text = TEMPLATE.read_text()
    block = re.search(r"log_format flaskstack (.*?);", text, re.S).group(1)
    return "".join(re.findall(r"'([^']*)'", block))


def line(status: int, seconds: str, agent: str = "Mozilla/5.0") -> str:
    values = {
        "remote_addr": "203.0.113.9", "remote_user": "-",
        "time_local": "04/Dec/2026:22:00:00 +0000", "request": "GET /posts/1 HTTP/2.0",
        "status": str(status), "body_bytes_sent": "5120", "http_referer": "-",
        "http_user_agent": agent, "request_id": "0f1e2d3c4b5a6978", "request_time": seconds,
    }  # fmt: skip
    return re.sub(r"\$([a-z_]+)", lambda m: values[m.group(1)], log_format())


@pytest.fixture(scope="module")
def metrics(tmp_path_factory) -> str:
    if not MTAIL.exists():
        pytest.fail(f"{MTAIL} is missing: run `make deps`")
    work = tmp_path_factory.mktemp("mtail")
    (work / "progs").mkdir()
    (work / "progs" / PROGRAM.name).write_text(PROGRAM.read_text())
    quoted = "curl \\x22quoted\\x22 (X11)"  # nginx escapes a quote in a variable as \x22
    lines = [line(200, "0.004"), line(200, "0.040"), line(304, "0.001"), line(404, "0.002"),
             line(502, "1.500"), line(200, "0.300", agent=quoted)]  # fmt: skip
    (work / "access.log").write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [str(MTAIL), "--progs", str(work / "progs"), "--logs", str(work / "access.log"),
         "--one_shot", "--one_shot_format", "prometheus", "--address", "127.0.0.1", "--port", "0",
         "--logtostderr"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def sample(metrics: str, name: str, **labels: str) -> float:
    for text in metrics.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", text)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no {name} {labels} in:\n{metrics}")


def test_every_request_is_counted_by_status_class(metrics):
    assert sample(metrics, "flaskstack_edge_requests_total", status_class="2xx") == 3
    assert sample(metrics, "flaskstack_edge_requests_total", status_class="3xx") == 1
    assert sample(metrics, "flaskstack_edge_requests_total", status_class="4xx") == 1
    assert sample(metrics, "flaskstack_edge_requests_total", status_class="5xx") == 1


def test_request_times_fall_into_their_buckets(metrics):
    bucket = "flaskstack_edge_request_seconds_bucket"
    assert sample(metrics, bucket, status_class="2xx", le="0.005") == 1
    assert sample(metrics, bucket, status_class="2xx", le="0.05") == 2
    assert sample(metrics, bucket, status_class="2xx", le="0.5") == 3
    assert sample(metrics, bucket, status_class="5xx", le="1") == 0
    assert sample(metrics, bucket, status_class="5xx", le="2.5") == 1
    assert sample(metrics, "flaskstack_edge_request_seconds_sum", status_class="5xx") == 1.5
