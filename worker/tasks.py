"""The two tasks, ``scraper.scrape`` and ``scraper.push``: decode the message, call the runtime, fan out."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Task

from scraper.errors import PushError
from scraper.plan import describe
from scraper.runtime import Runtime
from scraper.settings import Settings

from .celery_app import app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """This process's runtime, built on first use (after Celery has forked and gevent has patched)."""
    return Runtime(Settings())


@app.task(name="scraper.scrape", ignore_result=True)
def scrape(job: str, profile_type: str, target_labels: dict[str, str], scheduled_at: float) -> str:
    """Scrape one profile type of one target; send one push per receiver when the profile is valid."""
    result = runtime().scrape(job, profile_type, target_labels, scheduled_at)
    if not result.ok:
        log.info("scrape failed: %s %s: %s", job, profile_type, result.error)
        return f"down ({result.error.kind}): {result.error}"  # type: ignore[union-attr]
    labels = result.spec.labels
    for receiver in result.spec.forward_to:
        push.apply_async(
            args=(result.push_id, receiver),
            argsrepr=f"{receiver} {describe(job, labels.get('instance', ''), profile_type, scheduled_at)}",
        )
    return f"up: {len(result.body or b'')} bytes in {result.duration:.2f}s"


@app.task(name="scraper.push", bind=True, acks_late=True, ignore_result=True, max_retries=None)
def push(self: Task, push_id: str, receiver: str) -> str:
    """Deliver one pending profile to one receiver, retrying with backoff; dead-letter it when retries run out."""
    rt = runtime()
    try:
        delivered = rt.push(push_id, receiver)
    except PushError as exc:
        attempt = self.request.retries + 1
        delay = rt.retry_delay(receiver, attempt, exc)
        if delay is None:
            rt.give_up(push_id, receiver, exc, attempt)
            return f"dead-lettered after {attempt} attempts: {exc}"
        log.warning("push %s to %s failed (attempt %d), retrying in %.1fs: %s", push_id, receiver, attempt, delay, exc)
        # A retry is a new message: without its argsrepr Flower would show the raw (push id, receiver).
        raise self.retry(countdown=delay, exc=exc, argsrepr=self.request.argsrepr,
                         kwargsrepr=self.request.kwargsrepr) from None
    return "delivered" if delivered else "nothing to deliver (already delivered, or dead-lettered)"
