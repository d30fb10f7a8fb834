"""How much memory does uploading a large document cost? (goal: under 16 MB for 95 MB).

Starts the API emulator in its own process (so its memory is not counted), writes a PDF of
``--size-mb`` MB, and for ``Client`` and ``AsyncClient`` runs one ``steps.run_async(file=path)``
in a fresh child process, reporting how much that upload raised the child's peak RSS
(``ru_maxrss``) over a warmed-up baseline. ``--compare-sdk`` measures the official ``docutray``
SDK the same way. Exits 1 when one of our clients goes over the goal.

    .venv/bin/python benchmarks/upload_memory.py [--size-mb 95] [--compare-sdk]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GOAL_MB = 16.0
API_KEY = "benchmark-key"
STEP_ID = "step_benchmark"
_EMULATOR_CODE = "from docutray_watch.emulator.cli import emulator_command; emulator_command()"
_URL_LINE = re.compile(r"emulator at (http://\S+)")
_VARIANTS = {"client": "Client", "async": "AsyncClient", "sdk": "docutray SDK 0.2.1"}


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_pdf(path: Path, size_mb: float) -> None:
    """A PDF-looking file: valid header, zero body (sparse on disk), EOF marker."""
    trailer = b"\n%%EOF\n"
    size = int(size_mb * 1024 * 1024)
    with path.open("wb") as handle:
        handle.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        handle.truncate(size - len(trailer))
        handle.seek(size - len(trailer))
        handle.write(trailer)


@contextmanager
def _emulator() -> Iterator[str]:
    """Run the emulator CLI in a child process; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR_CODE, "--port", "0", "--api-key", API_KEY,
         "--latency", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = _URL_LINE.search(line)
            if match:
                yield match.group(1)
                return
        raise RuntimeError("the emulator exited before announcing its URL")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _measure(variant: str, base_url: str, path: Path) -> dict[str, float]:
    """In this (child) process: warm up, then upload ``path`` once; report the RSS growth."""
    warmup = path.with_name("warmup.pdf")
    warmup.write_bytes(b"%PDF-1.7\n" + b"0" * 4096 + b"\n%%EOF\n")
    status: object
    if variant == "sdk":
        from docutray import Client as SdkClient

        with SdkClient(api_key=API_KEY, base_url=base_url) as sdk:
            sdk.steps.run_async(STEP_ID, file=warmup)
            before = _peak_rss_mb()
            started = time.perf_counter()
            status = sdk.steps.run_async(STEP_ID, file=path)
    elif variant == "client":
        from docutray_watch.client import Client

        with Client(api_key=API_KEY, base_url=base_url) as client:
            client.steps.run_async(STEP_ID, file=warmup)
            before = _peak_rss_mb()
            started = time.perf_counter()
            status = client.steps.run_async(STEP_ID, file=path)
    else:
        import asyncio

        from docutray_watch.client import AsyncClient

        async def upload() -> tuple[float, float, object]:
            async with AsyncClient(api_key=API_KEY, base_url=base_url) as client:
                await client.steps.run_async(STEP_ID, file=warmup)
                baseline = _peak_rss_mb()
                start = time.perf_counter()
                return baseline, start, await client.steps.run_async(STEP_ID, file=path)

        before, started, status = asyncio.run(upload())
    elapsed = time.perf_counter() - started
    assert getattr(status, "status", None) == "ENQUEUED", status
    after = _peak_rss_mb()
    return {"before_mb": before, "after_mb": after, "added_mb": after - before, "seconds": elapsed}


def _run_child(variant: str, base_url: str, path: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--base-url", base_url, "--file", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=float, default=95.0, help="document size (default 95)")
    parser.add_argument(
        "--compare-sdk", action="store_true", help="also measure the official docutray SDK"
    )
    parser.add_argument("--child", choices=sorted(_VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_measure(args.child, args.base_url, args.file)))
        return 0

    if args.size_mb * 2**20 > 100 * 2**20:
        parser.error("--size-mb must be at most 100 (the service's upload limit)")
    variants = ["client", "async"] + (["sdk"] if args.compare_sdk else [])
    with tempfile.TemporaryDirectory(prefix="upload-memory-") as folder, _emulator() as base_url:
        path = Path(folder) / "large.pdf"
        _write_pdf(path, args.size_mb)
        print(
            f"upload of a {path.stat().st_size / 2**20:.1f} MiB PDF to the emulator at {base_url}"
        )
        print(f"{'client':<20} {'peak RSS added':>15} {'ratio to 16 MB':>15} {'seconds':>8}")
        over_goal = False
        for variant in variants:
            result = _run_child(variant, base_url, path)
            ratio = result["added_mb"] / GOAL_MB
            print(
                f"{_VARIANTS[variant]:<20} {result['added_mb']:>12.1f} MB {ratio:>15.2f} "
                f"{result['seconds']:>8.2f}"
            )
            if variant != "sdk" and result["added_mb"] > GOAL_MB:
                over_goal = True
    print("over the goal" if over_goal else "within the goal")
    return 1 if over_goal else 0


if __name__ == "__main__":
    sys.exit(main())
