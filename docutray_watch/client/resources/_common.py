"""What every resource needs from its client, and building an upload off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from docutray_watch.client._request import RequestSpec

__all__ = ["AsyncSender", "Sender", "build_off_loop"]


class Sender(Protocol):
    """The sync client, as a resource sees it."""

    def _send(self, spec: RequestSpec) -> httpx.Response: ...


class AsyncSender(Protocol):
    """The async client, as a resource sees it."""

    def _send(self, spec: RequestSpec) -> Awaitable[httpx.Response]: ...


def _build_and_preload(build: Callable[[], RequestSpec]) -> RequestSpec:
    spec = build()
    if spec.multipart is not None:
        spec.multipart.preload()
    return spec


async def build_off_loop(build: Callable[[], RequestSpec]) -> RequestSpec:
    """``build()`` an upload request in a worker thread, then read a small file for the first
    attempt in the same trip: stat, sniffing and base64 checks touch the disk or scan big
    strings, and must not block the event loop."""
    return await asyncio.to_thread(_build_and_preload, build)
