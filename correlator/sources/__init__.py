"""Clients of the two upstreams: Alertmanager (alerts in and out), Prometheus (guest facts)."""

from __future__ import annotations

import asyncio
import json

_BIG_BODY = 64 * 1024


async def decode_json(body: bytes) -> object:
    """json.loads, in a worker thread for large bodies so webhooks keep flowing meanwhile."""
    if len(body) < _BIG_BODY:
        return json.loads(body)
    return await asyncio.to_thread(json.loads, body)
