"""For running a worker's stages in the test process: a thread pool as the domain's ``Spawn``
(scraper.concurrency; a worker uses greenlets), and a worker's config for one pprof target."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: the slow type's profiling window, the CPU profile's ``?seconds=``
CPU_SECONDS = 1


def write_config(path: Path, store: Path, address: str) -> Path:
    """A config at ``path`` scraping goroutine, memory and process_cpu of ``address`` into the file store ``store``."""
    path.write_text(f"""
scrape:
  demo:
    targets: [{{__address__: "{address}", app: demo}}]
    forward_to: [files]
    scrape_interval: 3s
    delta_profiling_duration: {CPU_SECONDS}s
    profiling_config:
      profile.block: {{enabled: false}}
      profile.mutex: {{enabled: false}}
write:
  files: {{type: file, path: "{store}"}}
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


def spawn_in(pool: ThreadPoolExecutor) -> Callable[..., ThreadCall]:
    """A ``Spawn`` that runs each call in ``pool``."""

    def spawn(func: Callable[..., Any], /, *args: Any) -> ThreadCall:
        return ThreadCall(pool.submit(func, *args))

    return spawn
