"""``[core] hostname_callable`` of the local stack's Celery workers (scripts/airflow_stack.py).

Airflow records a task instance's hostname from this callable; several workers on one machine would all
record the machine's name, so each worker process is given its own in STACK_WORKER_HOSTNAME.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("STACK_WORKER_HOSTNAME") or socket.getfqdn()
