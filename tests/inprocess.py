"""For running a worker's stages in the test process: a thread pool as the domain's ``Spawn``
(scraper.concurrency; a worker uses greenlets), and a worker's config for one pprof target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

#: the slow type's profiling window, the CPU profile's ``?seconds=``
CPU_SECONDS = 1


def write_config(path: Path, store: Path, address: str, pyroscope: str | None = None) -> Path:
    """A config at ``path`` scraping goroutine, memory and process_cpu of ``address`` into the file store
    ``store`` (and to a Pyroscope at the URL ``pyroscope``, the receiver ``pyro``, when given)."""
    elsewhere = f"\n  pyro: {{type: pyroscope, url: \"{pyroscope}\"}}" if pyroscope else ""
    path.write_text(f"""
scrape:
  demo:
    targets: [{{__address__: "{address}", app: demo}}]
    forward_to: [files{", pyro" if pyroscope else ""}]
    scrape_interval: 3s
    delta_profiling_duration: {CPU_SECONDS}s
    profiling_config:
      profile.block: {{enabled: false}}
      profile.mutex: {{enabled: false}}
write:
  files: {{type: file, path: "{store}"}}{elsewhere}
""")
    return path


class ThreadCall:
    """A call running in a thread (scraper.concurrency.Started)."""

    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def result(self) -> Any:
        try:
            return self.future.result()
        except Exception as exc:  # noqa: BLE001 - a value, as Started says
            return exc

    def cancel(self) -> None:
        self.future.cancel()


class spawn_in:  # noqa: N801 - used as a function: spawn_in(pool)
    """A ``Spawn`` that runs each call in ``pool``."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    def __call__(self, func: Callable[..., Any], /, *args: Any) -> ThreadCall:
        return ThreadCall(self.pool.submit(func, *args))

    def ended(self, started: Sequence[Any], timeout: float | None = None) -> list[Any]:
        wait([call.future for call in started], timeout=timeout, return_when=FIRST_COMPLETED)
        return [call for call in started if call.future.done()]
