"""`make status`: the stack on one screen, from the monitor host's Prometheus.

    python3 deploy/status_report.py http://127.0.0.1:9090

Each host up or down, the alerts firing, the edge's traffic (requests/s, share of 5xx, p50 and
p99), each edge's certificate days left, and the age of the newest base backup and archived WAL.
Standard library only. Exits 1 when a host is down or a critical alert fires, so scripts can
use it too.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # The tunnel is on loopback: never through a proxy the environment names.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(self, expr: str) -> list[tuple[dict, float]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with self.opener.open(url, timeout=15) as answer:
            data = json.load(answer)["data"]["result"]
        return [(item["metric"], float(item["value"][1])) for item in data]

    def one(self, expr: str) -> float | None:
        result = self.query(expr)
        return result[0][1] if result else None


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:  # missing, or NaN
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return (
                f"{seconds / size:.1f} {unit}"
                if seconds < 10 * size
                else f"{seconds / size:.0f} {unit}"
            )
    return f"{seconds:.0f} s"


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds * 1000:.0f} ms"


def report(prometheus: Prometheus) -> tuple[list[str], bool]:
    healthy = True
    hosts = sorted(prometheus.query('up{job="node"}'), key=lambda item: item[0]["instance"])
    states = []
    for labels, up in hosts:
        states.append(f"{labels['instance']} {'up' if up == 1 else 'DOWN'}")
        healthy &= up == 1
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    alerts = [
        f"{labels['alertname']} on {labels.get('instance', '?')} ({labels.get('severity', '?')})"
        for labels, _ in sorted(firing, key=lambda item: item[0]["alertname"])
    ]
    healthy &= not any(labels.get("severity") == "critical" for labels, _ in firing)

    edge = "flaskstack_edge_requests_total"
    rate = prometheus.one(f"sum(rate({edge}[5m]))")
    errors = prometheus.one(f'sum(rate({edge}{{status_class="5xx"}}[5m])) / sum(rate({edge}[5m]))')
    buckets = "sum by (le) (rate(flaskstack_edge_request_seconds_bucket[5m]))"
    p50 = prometheus.one(f"histogram_quantile(0.5, {buckets})")
    p99 = prometheus.one(f"histogram_quantile(0.99, {buckets})")
    # The fewest days left per edge host and key type, over the site's names.
    certificates = sorted(
        prometheus.query(
            "min by (instance, key) ((flaskstack_tls_certificate_expiry_timestamp_seconds"
            " - time()) / 86400)"
        ),
        key=lambda item: (item[0]["instance"], item[0]["key"]),
    )
    backup_age = prometheus.one("time() - max(flaskstack_pgbackrest_last_backup_timestamp_seconds)")
    wal_age = prometheus.one(
        "time() - max(flaskstack_pgbackrest_archiver_last_archived_timestamp_seconds)"
    )

    traffic = "-" if rate is None else (
        f"{rate:.1f} req/s at the edge · 5xx {100 * (errors or 0):.2f} %"
        f" · p50 {milliseconds(p50)} · p99 {milliseconds(p99)}"
    )  # fmt: skip
    days_left = " · ".join(
        f"{labels['instance']} {labels['key']} {days:.0f} days" for labels, days in certificates
    )
    lines = [
        f"hosts     {' · '.join(states) or 'none scraped'}",
        f"alerts    {'none firing' if not alerts else alerts[0]}",
        *(f"          {alert}" for alert in alerts[1:]),
        f"traffic   {traffic}",
        f"certs     {days_left or '-'} left",
        f"backups   newest base backup {duration(backup_age)} ago"
        f" · newest archived WAL {duration(wal_age)} ago",
    ]
    return lines, healthy


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    lines, healthy = report(Prometheus(sys.argv[1]))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"status at {stamp}: {'healthy' if healthy else 'NOT healthy'}")
    print("\n".join(lines))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
