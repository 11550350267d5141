"""The no-op workload on Celery with a Redis broker, as `muster bench` runs
it on Muster: TASKS tasks queued SUBMITTERS at a time while a worker with
CONCURRENCY threads runs them. Prints one JSON line: tasks finished per
second while queueing went on, and enqueue-to-start latency percentiles.

usage: python run.py BROKER_URL TASKS CONCURRENCY SUBMITTERS
"""
import json
import os
import subprocess
import sys
import threading
import time


def main():
    broker, tasks, concurrency, submitters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    queue = "bench%d" % os.getpid()
    env = dict(os.environ, BENCH_BROKER=broker, BENCH_QUEUE=queue)
    os.environ.update(BENCH_BROKER=broker, BENCH_QUEUE=queue)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import celery
    import redis
    import noop_tasks

    r = redis.Redis.from_url(broker)
    r.delete(queue, queue + ":done")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "noop_tasks", "worker", "-P", "threads", "-c", str(concurrency),
         "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"],
        cwd=os.path.dirname(os.path.abspath(__file__)), env=env)
    try:
        # The worker is ready once it answers a ping.
        deadline = time.time() + 60
        while not noop_tasks.app.control.ping(timeout=0.5):
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit("the Celery worker did not start")
        counter = iter(range(tasks))
        lock = threading.Lock()

        def submit():
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                noop_tasks.noop.apply_async(args=[time.time()])

        began = time.time()
        threads = [threading.Thread(target=submit) for _ in range(submitters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted = time.time()
        while r.llen(queue + ":done") < tasks:
            if worker.poll() is not None:
                raise SystemExit("the Celery worker died")
            time.sleep(0.01)
        rows = [tuple(map(float, x.split())) for x in r.lrange(queue + ":done", 0, -1)]
    finally:
        worker.terminate()
        worker.wait(30)
    latencies = sorted((s - q) * 1000 for q, s in rows)
    in_window = sum(1 for _, s in rows if s <= submitted)
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    print(json.dumps({
        "name": "celery",
        "version": celery.__version__,
        "backend": "Redis " + r.info()["redis_version"],
        "tasks": tasks,
        "concurrency": concurrency,
        "jobs_per_sec": in_window / (submitted - began),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": latencies[-1],
    }))
    r.delete(queue, queue + ":done")


if __name__ == "__main__":
    main()
