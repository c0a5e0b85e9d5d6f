"""Calls run off gevent's event loop, in a thread of their own, until too many wait for it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Monkey-patched, as a worker is; each call holds a real thread for 0.3 s and says which thread ran it.
SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, gevent
from worker.pool import OffTheHub
real_ident = monkey.get_original("threading", "get_ident")
real_sleep = monkey.get_original("time", "sleep")
hub_thread = real_ident()
def work():
    real_sleep(0.3)
    return real_ident() != hub_thread
offload = OffTheHub(threads=1, max_waiting=1)
calls = [gevent.spawn(offload, work) for _ in range(5)]
gevent.joinall(calls)
print(json.dumps([c.value for c in calls]))
"""


def test_past_its_waiting_limit_a_call_runs_in_place_instead_of_queueing_for_the_thread() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    in_thread = json.loads(done.stdout)
    # one call runs in the thread and one waits for it; the other three run in place
    assert sorted(in_thread) == [False, False, False, True, True]
