"""Where the stacks come from: OS threads, parked greenlets, and the frames that mean "waiting".

Under gevent only one greenlet per OS thread runs at a time, and its frames are the thread's
current frames (``sys._current_frames()``); every other live greenlet is parked and keeps its
top frame in ``gr_frame``. So threads plus parked greenlets cover every stack exactly once.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable
from operator import attrgetter
from types import FrameType
from typing import Any

from scraper.selfprofile.writer import Frame

#: (module, qualified name) of functions that, as the innermost Python frame of a thread, mean
#: the thread is blocked in C: a lock or condition wait, a selector/epoll wait, the gevent hub
#: waiting in its event loop, an idle pool worker waiting for work.
_WAITING_FUNCTIONS = (
    ("threading", "Condition.wait"),
    ("threading", "Thread._wait_for_tstate_lock"),
    ("selectors", "SelectSelector.select"),
    ("selectors", "PollSelector.select"),
    ("selectors", "EpollSelector.select"),
    ("selectors", "DevpollSelector.select"),
    ("selectors", "KqueueSelector.select"),
    ("concurrent.futures.thread", "_worker"),
    ("gevent.hub", "Hub.run"),
    ("gevent._threading", "_Condition.wait"),
    ("gevent._threading", "Queue.get"),
)


def original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent monkey-patching (the current one when unpatched)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def waiting_code_ids(*extra: Callable[..., Any]) -> frozenset[int]:
    """``id``s of the code objects of the known waiting functions of loaded modules, plus ``extra``.

    Only modules already imported are looked at: a module nobody imported has no thread in it.
    """
    functions: list[Any] = list(extra)
    for module_name, qualname in _WAITING_FUNCTIONS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        try:
            functions.append(attrgetter(qualname)(module))
        except AttributeError:  # platform without that selector, or a compiled (frameless) build
            continue
    return frozenset(id(f.__code__) for f in functions if hasattr(f, "__code__"))


def leaf_first(frame: FrameType | None) -> tuple[Frame, ...]:
    """The stack ending at ``frame`` as (code, line) pairs, innermost first."""
    stack = []
    while frame is not None:
        stack.append((frame.f_code, frame.f_lineno or 0))
        frame = frame.f_back
    return tuple(stack)


def parked_greenlet_frames() -> list[FrameType]:
    """The top frame of every live greenlet that is not running, from a walk of the GC's objects.

    Costly (it visits every tracked object), so it serves on-demand snapshots, not sampling.
    A running greenlet has no ``gr_frame``: its frames are its thread's current frames.
    """
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return []
    greenlet_type = greenlet_module.greenlet
    frames = []
    for obj in gc.get_objects():
        # not isinstance(): that asks a lazy proxy (celery's, werkzeug's) for __class__, evaluating it
        if issubclass(type(obj), greenlet_type):
            frame = obj.gr_frame
            if frame is not None:
                frames.append(frame)
    return frames
