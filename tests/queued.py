"""Reading the scrape messages beat queued, as a worker would decode them."""

from __future__ import annotations

import base64
import json


def scrapes_of(raw_message: bytes) -> list[list]:
    """[job, profile types, target labels, slot] of each target a queued scrape message carries
    (kombu keeps the body base64-encoded JSON; a task of several targets lists labels and slots)."""
    job, types, targets, slots = json.loads(base64.b64decode(json.loads(raw_message)["body"]))[0]
    if isinstance(targets, dict):
        targets, slots = [targets], [slots]
    return [[job, types, labels, slot] for labels, slot in zip(targets, slots, strict=True)]
