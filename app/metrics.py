"""The blog's own Prometheus metrics: its RQ queue, read from Redis at each scrape.

flaskstack.toml names `collector` (`metrics`); deploy/metrics.py serves what it yields beside the
request metrics that gunicorn's workers count for any app (deploy/gunicorn.conf.py). It only
reads: a scrape changes nothing in Redis. When Redis does not answer, collect() raises and
deploy/metrics.py reports the app's metrics as down instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask
from prometheus_client.core import GaugeMetricFamily, Metric
from rq import Queue, Worker

from app import create_app
from app.extensions import get_redis
from app.tasks import get_queue


class QueueCollector:
    """Jobs waiting and failed per queue, and the workers with a live heartbeat."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily(
            "flaskstack_rq_queue_jobs", "RQ jobs waiting in the queue", labels=["queue"]
        )
        failed = GaugeMetricFamily(
            "flaskstack_rq_failed_jobs", "RQ jobs in the queue's failed registry", labels=["queue"]
        )
        with self.app.app_context():
            connection = get_redis()
            # The app's queue even before its first job, and any other the workers know.
            queues = {queue.name: queue for queue in Queue.all(connection=connection)}
            own = get_queue(connection)
            queues.setdefault(own.name, own)
            for name, queue in sorted(queues.items()):
                waiting.add_metric([name], queue.count)
                failed.add_metric([name], queue.failed_job_registry.get_job_count(cleanup=False))
            # Worker.all drops a worker whose heartbeat stopped; the plain count would not.
            workers = len(Worker.all(connection=connection))
        return [
            waiting,
            failed,
            GaugeMetricFamily("flaskstack_rq_workers", "RQ workers alive", value=workers),
        ]


def collector() -> QueueCollector:
    """Built once by deploy/metrics.py: the app from the release's .env, as the worker builds it."""
    return QueueCollector(create_app())
