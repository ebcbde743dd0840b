"""The app's Prometheus metrics as a host serves them: gunicorn with deploy/gunicorn.conf.py and
PROMETHEUS_MULTIPROC_DIR counts every request in its workers, deploy/metrics.py adds their files
up and appends the app's own collector (the blog's RQ queue), on real Postgres and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from app.tasks import get_queue
from tools.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
GUESTBOOK = REPO / "examples/guestbook"
GUNICORN = Path(sys.executable).with_name("gunicorn")
REQUESTS = "flaskstack_http_requests_total"
DURATION = "flaskstack_http_request_duration_seconds_count"

Samples = dict[tuple[str, frozenset], float]


@contextlib.contextmanager
def serving(argv: list[str], port: int, env: dict[str, str], cwd: Path = REPO) -> Iterator[dict]:
    """A server process on `port`; yields a dict that holds its "pid", then its "output"."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = {"pid": process.pid}
    try:
        wait_for_port(port, process)
        yield run
    finally:
        process.send_signal(signal.SIGTERM)
        run["output"], _ = process.communicate(timeout=60)


def gunicorn(port: int, env: dict[str, str], cwd: Path = REPO, workers: int = 2):
    argv = [str(GUNICORN), "-c", str(REPO / "deploy/gunicorn.conf.py")]
    settings = {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    return serving(argv, port, {**env, **settings}, cwd)


def metrics_server(port: int, env: dict[str, str], cwd: Path = REPO):
    argv = [sys.executable, str(REPO / "deploy/metrics.py"), "--bind", f"127.0.0.1:{port}"]
    return serving(argv, port, env, cwd)


def request(port: int, path: str, method: str = "GET", body=None, headers=None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data, headers, method=method), timeout=10
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape_until(port: int, done: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    """A worker counts a request after its answer has gone out, so the client may be first."""
    deadline = time.monotonic() + timeout
    while not done(samples := scrape(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return samples


def counted(samples: Samples) -> dict[tuple[str, str, str], float]:
    """The request counter's samples by (method, endpoint, status)."""
    return {
        (labels["method"], labels["endpoint"], labels["status"]): count
        for (name, frozen), count in samples.items()
        if name == REQUESTS and (labels := dict(frozen))
    }


def write_counts(directory: Path, pid: int, count: float) -> None:
    """A worker's file as gunicorn's hooks leave it: `count` GET / answered with 200."""
    directory.mkdir(exist_ok=True)
    file = MmapedDict(str(directory / f"counter_{pid}.db"))
    labels = ("method", "endpoint", "status")
    key = mmap_key(REQUESTS.removesuffix("_total"), REQUESTS, labels, ("GET", "/", "200"), "")
    file.write_value(key, count, 0.0)
    file.close()


def workers_of(master: int) -> set[int]:
    return set(map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split()))


def test_requests_are_counted_by_endpoint_and_status(app, env, make_user, api_token, tmp_path):
    make_user("alice")
    token = api_token("alice")
    metrics_dir = tmp_path / "metrics"
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    web, scraped = free_port(), free_port()
    with metrics_server(scraped, env):
        # Before gunicorn has made the directory: no request metrics yet, and no error.
        assert REQUESTS not in {name for name, _ in scrape(scraped)}
        # What an earlier run left: the new master starts the counts afresh.
        write_counts(metrics_dir, 1, 1000)
        with gunicorn(web, env) as server:
            assert not (metrics_dir / "counter_1.db").exists()
            for _ in range(3):
                assert request(web, "/") == 200
            created = request(web, "/api/v1/posts", "POST", {"title": "T", "body": "B"}, token)
            assert created == 201
            assert request(web, "/posts/1") == 200
            assert request(web, "/posts/999") == 404
            assert request(web, "/no-such-page") == 404
            assert request(web, "/api/v1/posts", "POST", {"title": "", "body": "B"}, token) == 400
            assert request(web, "/static/css/site.css") == 200
            assert request(web, "/", "BREW") == 405
            samples = scrape_until(scraped, lambda s: sum(counted(s).values()) == 10)
        assert "Booting worker" in server["output"]

    assert counted(samples) == {
        ("GET", "/", "200"): 3,
        ("POST", "/api/v1/posts", "201"): 1,
        ("POST", "/api/v1/posts", "400"): 1,
        ("GET", "/posts/<int:post_id>", "200"): 1,
        ("GET", "/posts/<int:post_id>", "404"): 1,
        ("GET", "unmatched", "404"): 1,
        ("GET", "static", "200"): 1,
        # A method nobody routes: one label value for all of them, and no rule matched.
        ("other", "unmatched", "405"): 1,
    }
    assert value(samples, DURATION, method="GET", endpoint="/") == 3
    bucket = "flaskstack_http_request_duration_seconds_bucket"
    assert value(samples, bucket, method="GET", endpoint="/", le="+Inf") == 3
    assert value(samples, bucket, method="GET", endpoint="/", le="30.0") == 3
    assert value(samples, "flaskstack_http_request_duration_seconds_sum", method="GET",
                 endpoint="/") > 0  # fmt: skip
    # The blog's own collector answered, beside the request metrics.
    assert value(samples, "flaskstack_app_metrics_up") == 1
    assert value(samples, "flaskstack_rq_queue_jobs", queue="flaskstack") == 0


def test_a_killed_workers_counts_stay_in_the_totals(env, tmp_path):
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    web, scraped = free_port(), free_port()
    with gunicorn(web, env) as server, metrics_server(scraped, env):
        for _ in range(6):
            assert request(web, "/healthz") == 200
        healthz = {"method": "GET", "endpoint": "/healthz", "status": "200"}
        scrape_until(scraped, lambda s: value(s, REQUESTS, **healthz) == 6)
        killed = workers_of(server["pid"])
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (len(workers_of(server["pid"]) - killed) < 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(2):
            assert request(web, "/healthz") == 200
        # The counter and the histogram are two writes: a scrape may fall between them.
        samples = scrape_until(
            scraped,
            lambda s: (
                value(s, REQUESTS, **healthz) == 8
                and value(s, DURATION, method="GET", endpoint="/healthz") == 8
            ),
        )
    assert value(samples, REQUESTS, **healthz) == 8
    assert value(samples, DURATION, method="GET", endpoint="/healthz") == 8


def test_the_blogs_queue_metrics_follow_its_jobs(app, env, tmp_path):
    # No worker has run yet: no directory, and the app's metrics alone.
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    scraped = free_port()
    with metrics_server(scraped, env):
        samples = scrape(scraped)
        assert value(samples, "flaskstack_rq_queue_jobs", queue="flaskstack") == 0
        assert value(samples, "flaskstack_rq_failed_jobs", queue="flaskstack") == 0

        with app.app_context():
            get_queue().enqueue("operator.truediv", 1, 0)  # fails: ZeroDivisionError
        worker = subprocess.run(
            [sys.executable, "-m", "app.worker", "--burst", "--wait", "10"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, worker.stderr
        with app.app_context():
            for _ in range(2):
                get_queue().enqueue("operator.truediv", 1, 1)  # no worker runs these
        samples = scrape(scraped)
    assert value(samples, "flaskstack_rq_queue_jobs", queue="flaskstack") == 2
    assert value(samples, "flaskstack_rq_failed_jobs", queue="flaskstack") == 1
    assert value(samples, "flaskstack_rq_workers") == 0, "the burst worker has left"
    assert value(samples, "flaskstack_app_metrics_up") == 1


def test_the_metrics_still_answer_while_redis_is_down(env, tmp_path):
    metrics_dir = tmp_path / "metrics"
    write_counts(metrics_dir, 1, 5)
    unreachable = f"redis://:password@127.0.0.1:{free_port()}/0"
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "REDIS_URL": unreachable}
    scraped = free_port()
    with metrics_server(scraped, env) as server:
        for _ in range(3):
            samples = scrape(scraped)  # 200 every time
            assert value(samples, "flaskstack_app_metrics_up") == 0
            assert value(samples, "flaskstack_rq_queue_jobs", queue="flaskstack") is None
            assert value(samples, REQUESTS, method="GET", endpoint="/", status="200") == 5
    assert server["output"].count("the app's metrics (app.metrics:collector) failed") == 1


def test_any_app_is_measured_without_declaring_metrics(env, tmp_path):
    """The guestbook has no `metrics` key and knows nothing of Prometheus."""
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    web, scraped = free_port(), free_port()
    with gunicorn(web, env, GUESTBOOK, workers=1), metrics_server(scraped, env, GUESTBOOK):
        assert request(web, "/healthz") == 200
        assert request(web, "/static/guestbook.css") == 200
        assert request(web, "/nope") == 404
        samples = scrape_until(scraped, lambda s: sum(counted(s).values()) == 3)
    assert counted(samples) == {
        ("GET", "/healthz", "200"): 1,
        ("GET", "static", "200"): 1,
        ("GET", "unmatched", "404"): 1,
    }
    assert value(samples, "flaskstack_app_metrics_up") is None, "no collector declared"


def test_an_app_whose_lock_lacks_prometheus_client_runs_without_metrics(env, tmp_path):
    shadow = tmp_path / "shadow/prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not in this lock')\n")
    metrics_dir = tmp_path / "metrics"
    env = {
        **env,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(shadow.parent),
    }
    web = free_port()
    with gunicorn(web, env) as server:
        assert request(web, "/healthz") == 200
    assert "lacks prometheus-client: no request metrics" in server["output"]
    assert not metrics_dir.exists()
    refused = subprocess.run(
        [sys.executable, "deploy/metrics.py"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert "need prometheus-client in the app's lock" in refused.stderr
