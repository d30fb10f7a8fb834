"""What is the least CPU a durable pipeline can spend per document? A floor for the 4x target.

Runs scenario (a)'s work — N small documents, C executions in flight, latency L, against the
emulator in its own process — through the leanest pipeline that still keeps docutray-watch's
guarantees, written as one coroutine per document on one thread, no framework around it:

1. hash and sniff the file with the daemon's own ``intake.inspect_file`` and journal it as queued;
2. journal the intent to submit, committed before the POST (a crash after the POST must not
   submit again);
3. POST it (multipart, streamed from the open file) and journal the execution id;
4. sleep until L has passed (the latency is known: this is the warm case), read the status,
   again every 20 ms until it is terminal;
5. write the result with the daemon's own ``fsutil.atomic_write_bytes`` (temp file, fsync,
   rename, fsync of the folder) and journal the end; move the document to ``done/``.

The journal is SQLite in WAL mode with ``synchronous=FULL``, one commit per step as above (4 per
document), on the event loop's thread. ``--no-fsync`` turns durability off (``synchronous=OFF``
and no fsync): the rest of the floor. ``--bare`` keeps only the baseline script's own work (POST,
wait, GET, write the JSON; no hash, journal, fsync or move): what the script itself would cost on
one event loop. ``--http`` picks the HTTP stack: ``aiohttp`` directly,
``httpx`` on docutray-watch's ``AiohttpTransport``, or ``client``, the project's SDK-shaped
``AsyncClient`` on that httpx client (what the engine uses).

CPU is this process's user + system time (``getrusage``) from the first document to the last,
so imports and start-up are not in it: compare it with the "CPU ms/doc beyond the fixed cost"
row of ``benchmarks/run.py``. Loopback only.

    .venv/bin/python benchmarks/lean_floor.py [--docs 300] [--concurrency 16] [--latency 0.5]
        [--http aiohttp httpx client] [--no-fsync | --bare] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from _bench_docs import write_set
from _bench_proc import start_emulator
from http_stack import _httpx_client
from run import API_KEY, STEP_ID

from docutray_watch.client import AsyncClient
from docutray_watch.fsutil import atomic_write_bytes
from docutray_watch.intake import inspect_file

TERMINAL = {"SUCCESS", "ERROR"}

Submit = Callable[[Path], Awaitable[str]]
Read = Callable[[str], Awaitable[dict[str, Any]]]


class Journal:
    """The least journal with the daemon's ordering: one row per document, a commit per step."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        self.conn.execute(
            "CREATE TABLE documents (id INTEGER PRIMARY KEY, path TEXT, sha256 TEXT, "
            "state TEXT, execution_id TEXT, updated REAL)"
        )

    def add(self, path: Path, digest: str) -> int:
        cursor = self.conn.execute(
            "INSERT INTO documents (path, sha256, state, updated) VALUES (?, ?, 'queued', ?)",
            (str(path), digest, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set(self, row: int, state: str, execution_id: str | None = None) -> None:
        self.conn.execute(
            "UPDATE documents SET state = ?, execution_id = coalesce(?, execution_id), "
            "updated = ? WHERE id = ?",
            (state, execution_id, time.time(), row),
        )


def _write_result(folder: Path, name: str, record: dict[str, Any], *, fsync: bool) -> None:
    atomic_write_bytes(folder / f"{name}.json", json.dumps(record).encode(), fsync=fsync)


@contextlib.asynccontextmanager
async def _stack(name: str, base_url: str) -> Any:
    """(submit, read) for an HTTP stack."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    if name == "aiohttp":
        async with aiohttp.ClientSession(base_url) as session:

            async def submit(path: Path) -> str:
                with path.open("rb") as handle:
                    form = aiohttp.FormData()
                    form.add_field("image", handle, filename=path.name, content_type="image/png")
                    async with session.post(
                        f"/api/steps-async/{STEP_ID}", data=form, headers=headers
                    ) as answer:
                        answer.raise_for_status()
                        return str((await answer.json())["execution_id"])

            async def read(execution: str) -> dict[str, Any]:
                async with session.get(
                    f"/api/steps-async/status/{execution}", headers=headers
                ) as answer:
                    answer.raise_for_status()
                    body: dict[str, Any] = await answer.json()
                    return body

            yield submit, read
        return
    http = _httpx_client()
    async with http:
        if name == "httpx":

            async def submit(path: Path) -> str:
                with path.open("rb") as handle:
                    answer = await http.post(
                        f"{base_url}/api/steps-async/{STEP_ID}",
                        files={"image": (path.name, handle, "image/png")},
                        headers=headers,
                    )
                answer.raise_for_status()
                return str(answer.json()["execution_id"])

            async def read(execution: str) -> dict[str, Any]:
                answer = await http.get(
                    f"{base_url}/api/steps-async/status/{execution}", headers=headers
                )
                answer.raise_for_status()
                body: dict[str, Any] = answer.json()
                return body

            yield submit, read
            return
        client = AsyncClient(api_key=API_KEY, base_url=base_url, http_client=http)

        async def submit(path: Path) -> str:
            return (await client.steps.run_async(STEP_ID, file=path)).execution_id

        async def read(execution: str) -> dict[str, Any]:
            return (await client.steps.get_status(execution)).model_dump(mode="json")

        yield submit, read


async def _pipeline(
    documents: list[Path],
    folder: Path,
    *,
    stack: str,
    base_url: str,
    concurrency: int,
    latency: float,
    fsync: bool,
    bare: bool,
) -> None:
    journal = Journal(folder / "journal.db", fsync=fsync)
    out, done = folder / "out", folder / "done"
    out.mkdir()
    done.mkdir()
    slots = asyncio.Semaphore(concurrency)

    async def result_of(execution: str, read: Read) -> dict[str, Any]:
        await asyncio.sleep(latency + 0.02)  # the latency is known: one read when it is due
        status = await read(execution)
        while status["status"] not in TERMINAL:
            await asyncio.sleep(0.02)
            status = await read(execution)
        return status

    async def one(path: Path, submit: Submit, read: Read) -> None:
        async with slots:
            if bare:
                status = await result_of(await submit(path), read)
                _write_result(out, path.stem, {"source": path.name, **status}, fsync=False)
                return
            row = journal.add(path, inspect_file(path).sha256)
            journal.set(row, "submitting")
            execution = await submit(path)
            journal.set(row, "running", execution)
            status = await result_of(execution, read)
            _write_result(out, path.stem, {"source": path.name, **status}, fsync=fsync)
            journal.set(row, "done")
            path.rename(done / path.name)  # noqa: ASYNC240 - a few µs; kept on the one thread

    async with _stack(stack, base_url) as (submit, read):
        await asyncio.gather(*(one(path, submit, read) for path in documents))
    journal.conn.close()


def _check_complete(folder: Path, journaled: int, count: int) -> None:
    """Every document has its result; unless bare, its journal row at `done` and its file moved."""
    conn = sqlite3.connect(folder / "journal.db")
    try:
        states = dict(conn.execute("SELECT state, count(*) FROM documents GROUP BY state"))
    finally:
        conn.close()
    expected_states = {"done": journaled} if journaled else {}
    results = len(list((folder / "out").glob("*.json")))
    moved = len(list((folder / "done").iterdir()))
    if states != expected_states or results != count or moved != journaled:
        raise SystemExit(f"incomplete run: journal {states}, {results} results, {moved} moved")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run each stack ``--rounds`` times; print the median CPU ms per document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument(
        "--http",
        nargs="+",
        default=["aiohttp", "httpx", "client"],
        choices=["aiohttp", "httpx", "client"],
    )
    parser.add_argument("--no-fsync", action="store_true", help="durability off")
    parser.add_argument("--bare", action="store_true", help="only the baseline script's work")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    fsync = not (args.no_fsync or args.bare)
    with tempfile.TemporaryDirectory(prefix="docutray-floor-") as temp:
        root = Path(temp)
        with start_emulator(
            folder=root, api_key=API_KEY, latency=args.latency, jitter=0.0, rate_limit_rps=None
        ) as emulator:
            samples: dict[str, list[float]] = {stack: [] for stack in args.http}
            for round_ in range(args.rounds):
                for stack in args.http:
                    folder = root / f"{stack}-{round_}"
                    documents = write_set(folder / "inbox", args.docs)
                    emulator.reset()
                    before, started = _cpu(), time.perf_counter()
                    asyncio.run(
                        _pipeline(
                            documents,
                            folder,
                            stack=stack,
                            base_url=emulator.base_url,
                            concurrency=args.concurrency,
                            latency=args.latency,
                            fsync=fsync,
                            bare=args.bare,
                        )
                    )
                    cpu, wall = _cpu() - before, time.perf_counter() - started
                    _check_complete(folder, 0 if args.bare else args.docs, args.docs)
                    samples[stack].append(1000 * cpu / args.docs)
                    print(
                        f"  {stack:<8} round {round_ + 1}: {1000 * cpu / args.docs:.2f} ms/doc,"
                        f" wall {wall:.1f} s",
                        file=sys.stderr,
                    )
    mode = "bare: the script's work only" if args.bare else f"fsync {'on' if fsync else 'off'}"
    print(
        f"{args.docs} documents, C = {args.concurrency}, L = {args.latency} s, {mode}; "
        f"CPU ms per document, median of {args.rounds}"
    )
    for stack, values in samples.items():
        print(
            f"{stack:<10}{statistics.median(values):8.2f}   (runs: "
            + ", ".join(f"{value:.2f}" for value in values)
            + ")"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
