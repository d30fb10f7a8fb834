"""Soak: the real ``docutray-watch run`` daemon fed files at a steady rate for a while.

What a months-long service must not do is grow: memory, open files, threads, tasks. This starts the
emulator (its own process, latency L, a share of ERROR results and 503s) and the daemon with
``on_success: move`` / ``on_failure: move``, drops R documents per second
into its inbox for the given minutes (some of them not documents at all), and samples the
daemon's RSS, open file descriptors and threads every few seconds. At the end it checks that every
dropped file ended in done/ or failed/ and prints the samples and the growth of each figure
from a quarter into the run (after warm-up) to its end, as ratios.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 20] [--latency 0.5]

Loopback only; run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _bench_docs import write_png
from _bench_proc import start_emulator
from run import _watch_command

API_KEY = "soak-key"
STEP_ID = "stp_soak"


def _config(folder: Path, base_url: str, concurrency: int) -> Path:
    config = {
        "api": {
            "base_url": base_url,
            "api_key": API_KEY,
            "max_in_flight": concurrency,
            "requests_per_second": 1000,
        },
        "state_dir": str(folder / "state"),
        "log": {"level": "warning", "format": "json"},
        "shutdown_grace": 10,
        "pipelines": [
            {
                "name": "soak",
                "watch": {"path": str(folder / "inbox"), "settle": 0.2, "rescan_interval": 20},
                "steps": [STEP_ID],
                "poll": {"timeout": 120},
                "on_success": {"action": "move", "to": str(folder / "done")},
                "on_failure": {"action": "move", "to": str(folder / "failed")},
                "sinks": [{"type": "filesystem", "path": str(folder / "out")}],
            }
        ],
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def _sample(process: psutil.Process) -> dict[str, float]:
    with process.oneshot():
        return {
            "rss_mb": process.memory_info().rss / 2**20,
            "fds": float(process.num_fds()),
            "threads": float(process.num_threads()),
            "cpu_s": sum(process.cpu_times()[:2]),
        }


def _drop(inbox: Path, n: int, rng: random.Random) -> None:
    name = f"doc-{n:07d}"
    if n % 50 == 0:  # not a document: ends in failed/ with a reason
        (inbox / f"{name}.png").write_bytes(b"not an image at all")
        return
    temporary = inbox / f".{name}.part"  # written under a temporary name, then renamed
    write_png(temporary, seed=rng.randrange(2**31))
    temporary.rename(inbox / f"{name}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="documents dropped per second")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="docutray-soak-") as tmp:
        folder = Path(tmp)
        (folder / "inbox").mkdir()
        with start_emulator(
            folder=folder, api_key=API_KEY, latency=args.latency, jitter=0.2, rate_limit_rps=None
        ) as emulator:
            emulator.configure(error_rate=0.02, server_error_rate=0.01)
            config = _config(folder, emulator.base_url, args.concurrency)
            log_path = folder / "daemon.log"
            with log_path.open("wb") as log:
                daemon = subprocess.Popen(
                    [*_watch_command(), "run", "-c", str(config)], stdout=log, stderr=log
                )
            process = psutil.Process(daemon.pid)
            rng = random.Random(1)
            started = time.monotonic()
            end = started + args.minutes * 60
            dropped = 0
            samples: list[tuple[float, dict[str, float]]] = []
            next_sample = started
            while time.monotonic() < end:
                if daemon.poll() is not None:
                    print(log_path.read_text()[-3000:], file=sys.stderr)
                    raise SystemExit(f"the daemon exited with {daemon.returncode}")
                due = int((time.monotonic() - started) * args.rate)
                while dropped < due:
                    _drop(folder / "inbox", dropped, rng)
                    dropped += 1
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, _sample(process)))
                    next_sample += args.sample_every
                time.sleep(0.01)
            # Let the last documents finish, then stop as systemd would.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                settled = _count(folder / "done") + _count(folder / "failed", "*.png")
                if settled >= dropped:
                    break
                time.sleep(0.5)
            samples.append((time.monotonic() - started, _sample(process)))
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)

        done = _count(folder / "done")
        failed = _count(folder / "failed", "*.png")
        left = sorted(p.name for p in (folder / "inbox").iterdir())
        errors = [line for line in log_path.read_text().splitlines() if '"level": "error"' in line]
        print(f"dropped {dropped} in {args.minutes:g} min at {args.rate:g}/s; exit code {code}")
        print(f"done {done}, failed {failed}, left in the inbox {len(left)}: {left[:5]}")
        print(f"error log lines: {len(errors)}")
        print("\n    t (s)   RSS (MB)   fds  threads   CPU (s)")
        for at, s in samples:
            print(
                f"  {at:7.0f}   {s['rss_mb']:8.1f}  {s['fds']:4.0f}  {s['threads']:7.0f}"
                f"  {s['cpu_s']:8.1f}"
            )
        warm_at, warm = samples[max(1, len(samples) // 4)]
        end_at, end_sample = samples[-1]
        print(f"\nat {end_at:.0f} s ÷ at {warm_at:.0f} s (after warm-up):")
        for key in ("rss_mb", "fds", "threads"):
            a, b = warm[key], end_sample[key]
            print(f"  {key:8} {b / a:6.3f}  ({a:.1f} → {b:.1f})")
        per_doc = end_sample["cpu_s"] / max(1, dropped) * 1000
        print(f"CPU per document, start-up included: {per_doc:.1f} ms")
        lost = dropped - done - failed - len(left)
        print(f"lost: {lost}")
        return 0 if code == 0 and lost == 0 and not left else 1


def _count(folder: Path, pattern: str = "*") -> int:
    return sum(1 for p in folder.rglob(pattern) if p.is_file()) if folder.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
