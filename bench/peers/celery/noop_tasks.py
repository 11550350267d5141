"""The no-op task `muster bench` runs on Celery: it notes when it was queued
and when it started, and does nothing else."""
import os
import time

import redis
from celery import Celery

BROKER = os.environ["BENCH_BROKER"]
QUEUE = os.environ["BENCH_QUEUE"]

app = Celery("noop_tasks", broker=BROKER)
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True, worker_hijack_root_logger=False)
_record = redis.Redis.from_url(BROKER)


@app.task(name="noop")
def noop(queued_at):
    started = time.time()
    _record.rpush(QUEUE + ":done", "%f %f" % (queued_at, started))
