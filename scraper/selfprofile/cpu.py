"""A sampling CPU profiler of this process that keeps working under gevent monkey-patching.

How it samples: a real OS thread (gevent's *original* ``start_new_thread``, sleeping with the
original ``time.sleep``) wakes ``hz`` times a second and reads ``sys._current_frames()``: the
innermost frames of every OS thread. Under gevent those are the frames of the greenlet running
on that thread at that instant — the only greenlet that can be on CPU there; parked greenlets
are off CPU by definition (they appear in the goroutine profile instead).

Which stacks count as on-CPU, per thread and tick. A *waiting frame* is an innermost frame in
a known waiting function (``threading.Condition.wait``, a ``selectors`` wait, the gevent hub's
``Hub.run``, an idle pool worker: see ``stacks._WAITING_FUNCTIONS``), where the thread sits in
C, usually blocked.

- With per-thread CPU clocks (Linux: ``time.pthread_getcpuclockid``), the CPU the thread used
  since the previous tick decides, and becomes the sample's ``cpu/nanoseconds``. A thread that
  used none is idle, whatever its frame: blocked in a socket read, in ``sleep``. A thread in
  a waiting frame is idle unless it used at least half a period: ``Hub.run`` is also where the
  hub runs its C event loop between greenlets, and a hub that busy is dispatching, not waiting.
- Without them, a thread in a waiting frame is idle and any other counts a full period.

``samples/count`` counts the ticks at which a stack was seen on CPU.
"""

from __future__ import annotations

import sys
import time
from types import FrameType

from scraper.selfprofile.stacks import original, waiting_code_ids
from scraper.selfprofile.writer import Frame, ProfileBuilder

CPU_IN_USE_MESSAGE = "Could not enable CPU profiling: cpu profiling already in use"


class CPUProfileInUse(RuntimeError):
    """Another CPU profile of this process is running; one at a time, as in Go."""

    def __init__(self) -> None:
        super().__init__(CPU_IN_USE_MESSAGE)


# a real lock even if this module is imported after monkey-patching: sampler threads release it
_profiling = original("_thread", "allocate_lock")()


class CPUSampler:
    """One CPU profile: ``start()`` it, then ``wait()`` for its end or ``stop()`` it early."""

    def __init__(self, hz: int = 100) -> None:
        if not 1 <= hz <= 1000:
            raise ValueError(f"hz must be between 1 and 1000, got {hz}")
        self.hz = hz
        self.period_ns = 1_000_000_000 // hz
        #: CPU seconds the sampling thread itself used, known once it has finished
        self.sampler_cpu_seconds = 0.0
        self._started = False
        self._stop_requested = False
        self._finished = False
        self._listeners: list[object] = []
        self._result: bytes | None = None
        self._error: BaseException | None = None
        self._state = original("_thread", "allocate_lock")()
        self._done = original("_thread", "allocate_lock")()

    def start(self, seconds: float | None = None) -> None:
        """Begin sampling in a new OS thread, for ``seconds`` or until ``stop()``.

        Raises ``CPUProfileInUse`` if another profile of this process is running.
        """
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if self._started:
            raise RuntimeError("a CPUSampler runs once; make a new one for the next profile")
        if not _profiling.acquire(False):
            raise CPUProfileInUse()
        try:
            self._done.acquire()
            # decided here, in the caller's thread, which sees the same modules the sampler will
            idle = waiting_code_ids(CPUSampler._wait_blocking)
            original("_thread", "start_new_thread")(self._run, (seconds, idle))
            self._started = True
        except BaseException:
            self._done.release()
            _profiling.release()
            raise

    def stop(self) -> bytes:
        """End sampling now and return the profile."""
        self._stop_requested = True
        return self.wait()

    def wait(self) -> bytes:
        """The gzipped profile, once sampling ends; greenlets wait without blocking their hub."""
        if not self._started:
            raise RuntimeError("the CPUSampler was not started")
        hub = _cooperative_hub()
        try:
            if hub is None:
                self._wait_blocking()
            else:
                self._wait_in_hub(hub)
        except BaseException:
            self._stop_requested = True  # the caller gave up (killed, timed out): end early
            raise
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _wait_blocking(self) -> None:
        self._done.acquire()
        self._done.release()

    def _wait_in_hub(self, hub: object) -> None:
        from gevent.event import Event

        woken = Event()
        # an async watcher is the one loop object another OS thread may poke (send()) safely
        watcher = hub.loop.async_()  # type: ignore[attr-defined]
        watcher.start(woken.set)
        try:
            with self._state:
                if self._finished:
                    return
                self._listeners.append(watcher)
            woken.wait()
        finally:
            with self._state:  # under the lock, so the sampler never pokes a closed watcher
                if watcher in self._listeners:
                    self._listeners.remove(watcher)
            watcher.stop()
            watcher.close()

    def _run(self, seconds: float | None, idle: frozenset[int]) -> None:
        try:
            self._result = self._sample(seconds, idle)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
            self._error = error
        finally:
            self.sampler_cpu_seconds = time.thread_time()
            _profiling.release()
            with self._state:
                self._finished = True
                for watcher in self._listeners:
                    watcher.send()  # type: ignore[attr-defined]
            self._done.release()

    def _sample(self, seconds: float | None, idle: frozenset[int]) -> bytes:
        sleep = original("time", "sleep")
        me = original("_thread", "get_ident")()
        interval = 1.0 / self.hz
        half_period = self.period_ns // 2
        counts: dict[tuple[tuple[int, int], ...], list[int]] = {}
        stacks: dict[tuple[tuple[int, int], ...], tuple[Frame, ...]] = {}
        clocks = _ThreadClocks()
        clocks.baseline(sys._current_frames())
        start_wall = time.time_ns()
        start = time.monotonic()
        deadline = None if seconds is None else start + seconds
        next_tick = start + interval
        while not self._stop_requested:
            now = time.monotonic()
            if deadline is not None and next_tick > deadline:
                sleep(max(0.0, deadline - now))
                break
            sleep(max(0.0, next_tick - now))
            # after a stall (GIL held by C code, a suspended VM) skip missed ticks, don't burst
            next_tick = max(next_tick + interval, time.monotonic())
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                waiting = id(frame.f_code) in idle
                cpu_ns = clocks.progress(ident)
                if cpu_ns is None:
                    if not waiting:
                        _count(frame, self.period_ns, counts, stacks)
                elif cpu_ns >= (half_period if waiting else 1):
                    _count(frame, cpu_ns, counts, stacks)
        duration = time.monotonic() - start
        builder = ProfileBuilder([("samples", "count"), ("cpu", "nanoseconds")], ("cpu", "nanoseconds"), self.period_ns)
        for key, values in counts.items():
            builder.add(stacks[key], values)
        return builder.gzipped(time_nanos=start_wall, duration_nanos=int(duration * 1e9))


def _count(
    frame: FrameType | None,
    cpu_ns: int,
    counts: dict[tuple[tuple[int, int], ...], list[int]],
    stacks: dict[tuple[tuple[int, int], ...], tuple[Frame, ...]],
) -> None:
    # keyed by code identity (cheap to hash); the first sight of a stack keeps its code objects
    # alive in ``stacks``, so an id cannot be reused by another code object meanwhile
    frames = []
    while frame is not None:
        frames.append((frame.f_code, frame.f_lineno or 0))
        frame = frame.f_back
    key = tuple((id(code), line) for code, line in frames)
    values = counts.get(key)
    if values is None:
        counts[key] = [1, cpu_ns]
        stacks[key] = tuple(frames)
    else:
        values[0] += 1
        values[1] += cpu_ns


class _ThreadClocks:
    """CPU time each thread used since the previous tick, from per-thread CPU clocks where available."""

    def __init__(self) -> None:
        self._available = hasattr(time, "pthread_getcpuclockid")
        self._clock_ids: dict[int, int | None] = {}
        self._last: dict[int, int] = {}

    def baseline(self, threads: dict[int, FrameType]) -> None:
        for ident in threads:
            now = self._read(ident)
            if now is not None:
                self._last[ident] = now

    def progress(self, ident: int) -> int | None:
        """Nanoseconds of CPU ``ident`` used since last asked, or None when it cannot be told."""
        now = self._read(ident)
        if now is None:
            return None
        # a thread born during the profile: all the CPU it ever used falls inside the profile
        used = now - self._last.get(ident, 0)
        self._last[ident] = now
        return used

    def _read(self, ident: int) -> int | None:
        if not self._available:
            return None
        if ident in self._clock_ids:
            clock_id = self._clock_ids[ident]
        else:
            try:
                clock_id = time.pthread_getcpuclockid(ident)
            except OSError:
                clock_id = None
            self._clock_ids[ident] = clock_id
        if clock_id is None:
            return None
        try:
            return time.clock_gettime_ns(clock_id)
        except OSError:  # the thread ended between listing and reading
            self._clock_ids.pop(ident, None)
            return None


def _cooperative_hub() -> object | None:
    """The gevent hub to wait through, when called from a greenlet of a thread that has one."""
    if "gevent" not in sys.modules:
        return None
    from gevent._hub_local import get_hub_if_exists
    from greenlet import getcurrent

    hub = get_hub_if_exists()
    if hub is None or getcurrent() is hub:
        return None
    return hub


def cpu_profile(seconds: float, hz: int = 100) -> bytes:
    """A gzipped pprof CPU profile of this process over ``seconds``, sampled ``hz`` times a second.

    Raises ``CPUProfileInUse`` if another CPU profile of this process is running.
    """
    sampler = CPUSampler(hz)
    sampler.start(seconds)
    return sampler.wait()
