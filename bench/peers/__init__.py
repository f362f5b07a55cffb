"""What bench/compare.py needs to run taskgrid's peers (and taskgrid) on one workload.

- `tg_tasks.py`, `celery_tasks.py`, `huey_tasks.py`: the same two trivial tasks for each system
  (`noop`, and `lat`, which reports its start time by a loopback UDP datagram);
- `driver.py`: the client side (enqueue loops, completion counts, latency, producers); it runs
  in the system's own interpreter (taskgrid's venv, or the peers venv made from
  `requirements.txt`);
- `systems.py`: starting, measuring and stopping each system's processes.

Nothing here is imported by taskgrid itself or by the tests.
"""
