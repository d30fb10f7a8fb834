"""What does one status read cost, layer by layer? CPU per request of each HTTP stack.

Starts the emulator in its own process (latency 0), creates one execution and reads its status
``--requests`` times in a row with each stack, one request at a time, measuring this process's
user and system CPU (``getrusage``) and wall time per request:

- ``raw``: asyncio streams and a hand-written HTTP/1.1 request — the floor, what the kernel and
  the event loop cost;
- ``aiohttp``: ``aiohttp.ClientSession.get``;
- ``httpx``: ``httpx.AsyncClient`` on docutray-watch's ``AiohttpTransport``, no cookie jar (as the
  engine sends);
- ``client``: ``docutray_watch.client.AsyncClient.steps.get_status`` on that httpx client (the
  engine's path: error mapping, retry policy, response model).

The system time is the kernel's share of a loopback request (about 30-45 µs here); everything
above ``raw`` is Python. Ratios are to ``raw``.

    .venv/bin/python benchmarks/http_stack.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
from _bench_docs import write_set
from _bench_proc import start_emulator
from run import API_KEY, STEP_ID

from docutray_watch.client import AiohttpTransport, AsyncClient
from docutray_watch.engine.http import NoCookies  # the engine's jar: measure what it sends with


async def _raw(base: httpx.URL, execution: str, n: int) -> None:
    reader, writer = await asyncio.open_connection(base.host, base.port)
    head = (
        f"GET /api/steps-async/status/{execution} HTTP/1.1\r\nHost: {base.host}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    try:
        for _ in range(n):
            writer.write(head)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in answer.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
    finally:
        writer.close()


async def _aiohttp(base: httpx.URL, execution: str, n: int) -> None:
    url = f"{base}/api/steps-async/status/{execution}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(url, headers=headers) as answer:
                await answer.read()


def _httpx_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(), cookies=NoCookies())


async def _httpx(base: httpx.URL, execution: str, n: int) -> None:
    url = f"{base}/api/steps-async/status/{execution}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    async with _httpx_client() as http:
        for _ in range(n):
            await http.get(url, headers=headers)


async def _client(base: httpx.URL, execution: str, n: int) -> None:
    async with _httpx_client() as http:
        client = AsyncClient(api_key=API_KEY, base_url=str(base), http_client=http)
        for _ in range(n):
            await client.steps.get_status(execution)


_STACKS: dict[str, Callable[[httpx.URL, str, int], Awaitable[None]]] = {
    "raw": _raw,
    "aiohttp": _aiohttp,
    "httpx": _httpx,
    "client": _client,
}


def _measure(stack: str, base: httpx.URL, execution: str, n: int) -> tuple[float, float, float]:
    """(user µs, system µs, wall µs) per request."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    asyncio.run(_STACKS[stack](base, execution, n))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        1e6 * (after.ru_utime - before.ru_utime) / n,
        1e6 * (after.ru_stime - before.ru_stime) / n,
        1e6 * wall / n,
    )


def main(argv: list[str] | None = None) -> int:
    """Measure every stack `--rounds` times (alternating); print the medians and ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docutray-http-") as temp:
        folder = Path(temp)
        write_set(folder / "doc", 1)
        document = next((folder / "doc").iterdir())
        with start_emulator(
            folder=folder, api_key=API_KEY, latency=0.0, jitter=0.0, rate_limit_rps=None
        ) as emulator:
            with document.open("rb") as handle:
                created = httpx.post(
                    f"{emulator.base_url}/api/steps-async/{STEP_ID}",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    files={"image": (document.name, handle, "image/png")},
                )
            created.raise_for_status()
            execution = created.json()["execution_id"]
            base = httpx.URL(emulator.base_url)
            for stack in _STACKS:  # warm-up: first connections, lazily built objects
                _measure(stack, base, execution, 50)
            samples: dict[str, list[tuple[float, float, float]]] = {s: [] for s in _STACKS}
            for _ in range(args.rounds):
                for stack in _STACKS:
                    samples[stack].append(_measure(stack, base, execution, args.requests))
    medians = {
        stack: tuple(sorted(column)[len(column) // 2] for column in zip(*rows, strict=True))
        for stack, rows in samples.items()
    }
    floor = sum(medians["raw"][:2])
    print(f"{args.requests} status reads per stack, median of {args.rounds} rounds, µs/request")
    print(f"{'stack':<10}{'user':>8}{'sys':>8}{'CPU':>8}{'wall':>8}{'CPU ÷ raw':>11}")
    for stack, (user, system, wall) in medians.items():
        cpu = user + system
        print(f"{stack:<10}{user:8.0f}{system:8.0f}{cpu:8.0f}{wall:8.0f}{cpu / floor:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
