"""The baseline: what a user writes instead of running docutray-watch.

The official ``docutray`` SDK (PyPI, 0.2.1) and a thread pool: each worker uploads one file with
``steps.run_async(file=...)``, waits with the SDK's ``wait()`` (fixed 2 s polling) and writes the
result as JSON next to the others. Deliberately plain — this is the script the benchmark compares
docutray-watch against, so it must stay the obvious one, not a tuned one.

    python benchmarks/baseline_sdk.py --base-url URL --api-key KEY --step STEP \
        --inbox DIR --out DIR --workers 16

Prints ``listed <epoch seconds> <count>`` once the folder is listed (the benchmark's "end of the
scan"), then one JSON summary line at the end; exits 1 if any document failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docutray import Client


def _process(client: Client, step_id: str, path: Path, out: Path) -> str | None:
    """Upload, wait, write the JSON; the error text if anything failed."""
    try:
        status = client.steps.run_async(step_id, file=path)
        final = status.wait()
        payload = final.model_dump(mode="json")
        (out / f"{path.name}.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    except Exception as exc:  # a user's script would log and go on
        return f"{path.name}: {type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Process every file of ``--inbox`` with ``--workers`` threads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--step", required=True)
    parser.add_argument("--inbox", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.inbox.iterdir() if p.is_file())
    print(f"listed {time.time():.6f} {len(files)}", flush=True)
    errors: list[str] = []
    with (
        Client(api_key=args.api_key, base_url=args.base_url) as client,
        ThreadPoolExecutor(max_workers=args.workers) as pool,
    ):
        futures = [pool.submit(_process, client, args.step, p, args.out) for p in files]
        for future in futures:
            error = future.result()
            if error is not None:
                errors.append(error)
    print(json.dumps({"documents": len(files), "failed": len(errors), "errors": errors[:10]}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
