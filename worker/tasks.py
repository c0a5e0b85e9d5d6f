"""The two tasks, ``scraper.scrape`` and ``scraper.push``: decode the message, call the runtime, fan out."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Task

from scraper import delivery
from scraper.plan import describe
from scraper.runtime import Owed, Runtime
from scraper.scrape import ScrapeResult
from scraper.settings import Settings

from . import pool
from .celery_app import app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """This process's runtime, built on first use (after Celery has forked and gevent has patched)."""
    return Runtime(Settings(), spawn=pool.spawn, validations=pool.validations, writes=pool.file_writes)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@app.task(name="scraper.scrape", ignore_result=True)
def scrape(job: str, profile_types: list[str] | str, target_labels: list[dict[str, str]] | dict[str, str],
           scheduled_at: list[float] | float) -> str:
    """Scrape profile types of targets (a list of their labels and a list of their slots), all
    concurrently; one push per receiver carries the valid profiles of the quick types as soon as they
    are in, another those of the types that hold for ``seconds``.

    Beat sends lists always. The one-target form of older beats (a type as a string, one target's
    labels as a dict, its slot as a number) is still accepted, for this release only.
    """
    rt = runtime()
    types = _as_list(profile_types)
    targets = [target_labels] if isinstance(target_labels, dict) else list(target_labels)
    slots = [float(scheduled_at)] * len(targets) if isinstance(scheduled_at, (int, float)) else list(scheduled_at)
    if len(slots) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(slots)} scheduled times: the message is malformed")

    def send_pushes(recorded: list[ScrapeResult], owed: Owed) -> None:
        """One push per receiver for what a wave's profiles still owe it (all but this host's file
        stores, which the scrape wrote), as soon as they are stored: the quick types' profiles do not
        wait out the slot's 14 s CPU profile."""
        for r in recorded:
            if not r.ok:
                log.info("scrape failed: %s %s %s: %s", job, r.spec.labels.get("instance", ""), r.spec.profile_type,
                         r.error)
        by_id = {r.push_id: r for r in recorded}
        for receiver, ids in owed.items():
            valid = [by_id[i] for i in ids]
            instances = list(dict.fromkeys(r.spec.labels.get("instance", "") for r in valid))
            about = describe(job, instances, list(dict.fromkeys(r.spec.profile_type for r in valid)), min(slots))
            push.apply_async(args=(ids, receiver), argsrepr=f"{receiver} {about}")
        delivery.published(rt.redis, sorted({i for ids in owed.values() for i in ids}))

    results, errors = rt.scrape(job, types, targets, slots, recorded=send_pushes)
    if errors:
        raise errors[0]
    return "; ".join(_outcome_line(r, with_instance=len(targets) > 1) for r in results)


def _outcome_line(result: ScrapeResult, *, with_instance: bool) -> str:
    """How one scrape went, as the task's result shows it in Flower."""
    what = f"{result.spec.labels.get('instance', '')} " * with_instance + result.spec.profile_type
    if result.ok:
        return f"{what} up: {len(result.body or b'')} bytes in {result.duration:.2f}s"
    return f"{what} down ({result.error.kind}): {result.error}"  # type: ignore[union-attr]


@app.task(name="scraper.push", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def push(self: Task, push_ids: str | list[str], receiver: str) -> str:
    """Deliver pending profiles to one receiver; retry those that failed with backoff, and
    dead-letter those whose retries ran out or that the receiver refused."""
    attempt = runtime().pushes.attempt(_as_list(push_ids), receiver, attempt=self.request.retries + 1)
    if attempt.retry:
        log.warning("push of %d profiles to %s failed (attempt %d), retrying in %.1fs: %s",
                    len(attempt.retry), receiver, self.request.retries + 1, attempt.delay, attempt.error)
        # A retry is a new message: without its argsrepr Flower would show the raw (push ids, receiver).
        raise self.retry(args=(attempt.retry, receiver), countdown=attempt.delay, exc=attempt.error,
                         argsrepr=self.request.argsrepr, kwargsrepr=self.request.kwargsrepr) from None
    return "; ".join(attempt.report)
