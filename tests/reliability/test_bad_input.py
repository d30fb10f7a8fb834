"""Bad input corpus: files that are empty, huge, lying, unreadable, special, or oddly named."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import unicodedata
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.samples import make_pdf
from tests.daemon.conftest import free_port
from tests.reliability.conftest import (
    DaemonFactory,
    Report,
    base_config,
    elapsed_since,
    journal_rows,
    pipeline_config,
    wait_for,
    without_root_powers,
)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@dataclass
class Expect:
    """What must become of one inbox entry."""

    outcome: str  # delivered | failed | ignored | dropped
    says: str = ""  # a piece of the reason (failed) or of the rule (ignored)


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        return int(answer.status)


def snapshot(root: Path) -> set[str]:
    """Every path under `root` (links not followed), relative."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def write_slowly_then_truncate(path: Path, final: bytes) -> None:
    """A writer that writes, truncates the file to nothing, then writes the final content."""
    with open(path, "wb") as handle:
        handle.write(make_pdf(["first attempt"]) + b"0" * MiB)
        handle.flush()
        time.sleep(0.3)
        handle.truncate(0)
        handle.seek(0)
        handle.flush()
        time.sleep(0.3)
        for start in range(0, len(final), 64 * 1024):
            handle.write(final[start : start + 64 * 1024])
            handle.flush()
            time.sleep(0.02)


class TestBadInput:
    def test_the_daemon_survives_and_explains_every_file(
        self,
        tmp_path: Path,
        emulator_factory: Any,
        reliable_daemon: DaemonFactory,
        report: Report,
    ) -> None:
        """Each entry is delivered, failed, ignored or dropped; no stray output; daemon up."""
        started = time.monotonic()
        emulator = emulator_factory(latency=0.2)
        port = free_port()
        spec = pipeline_config(
            tmp_path,
            "bad",
            watch={
                "path": str(tmp_path / "bad" / "in"),
                "settle": 0.5,
                "rescan_interval": 2,
            },
        )
        config = base_config(tmp_path, emulator, spec, metrics={"listen": f"127.0.0.1:{port}"})
        config["api"]["max_in_flight"] = (
            1  # a queue forms behind the blocker (deleted-while-queued)
        )
        wrapper = without_root_powers()
        daemon = reliable_daemon(config, wrapper=wrapper)
        inbox = tmp_path / "bad" / "in"
        outside = tmp_path / "outside"
        outside.mkdir()
        secret = make_pdf(["outside the inbox"])
        (outside / "secret.pdf").write_bytes(secret)
        before = snapshot(tmp_path)
        daemon.start()

        # Deleted while queued: a long document holds the only execution slot meanwhile.
        # (2 MiB: another size class, so its long latency does not shape the others' polling.)
        blocker = make_pdf(["blocker"], padding=2 * MiB) + b"DOCUTRAY-EMULATOR:LATENCY=4"
        (inbox / "blocker.pdf").write_bytes(blocker)
        wait_for(lambda: emulator.stats().executions_created == 1)
        victim = inbox / "deleted-while-queued.pdf"
        victim.write_bytes(make_pdf(["victim"]))
        journal = tmp_path / "state" / "journal.sqlite3"
        wait_for(
            lambda: journal_rows(
                journal, "SELECT 1 FROM documents WHERE path = ? AND state = 'queued'", str(victim)
            ),
            timeout=20,
        )
        victim.unlink()

        expect: dict[str, Expect] = {
            "blocker.pdf": Expect("delivered"),
            "deleted-while-queued.pdf": Expect("dropped", "disappeared"),
        }

        def put(name: str, data: bytes, outcome: Expect) -> Path:
            path = inbox / name
            path.write_bytes(data)
            expect[name] = outcome
            return path

        put("empty.pdf", b"", Expect("failed", "empty file"))
        with open(inbox / "huge.pdf", "wb") as handle:  # 101 MiB, sparse
            handle.write(make_pdf(["huge"]))
            handle.truncate(101 * MiB)
        expect["huge.pdf"] = Expect("failed", "too large")
        put("text.pdf", b"just some text, not a PDF\n" * 10, Expect("failed", "unsupported"))
        put("program.png", b"\x7fELF\x02\x01\x01" + b"\0" * 4096, Expect("failed", "unsupported"))
        unreadable = put(
            "unreadable.pdf", make_pdf(["unreadable"]), Expect("failed", "cannot read")
        )
        unreadable.chmod(0)
        if os.geteuid() == 0 and not wrapper:
            expect["unreadable.pdf"] = Expect("delivered")  # root reads it anyway
        put("plain.pdf", make_pdf(["plain"]), Expect("delivered"))
        os.symlink("plain.pdf", inbox / "link-inside.pdf")
        os.symlink(outside / "secret.pdf", inbox / "link-outside.pdf")
        os.symlink("loop-b.pdf", inbox / "loop-a.pdf")
        os.symlink("loop-a.pdf", inbox / "loop-b.pdf")
        for name in ("link-inside.pdf", "link-outside.pdf", "loop-a.pdf", "loop-b.pdf"):
            expect[name] = Expect("ignored", "symbolic link")
        os.mkfifo(inbox / "pipe.pdf")
        expect["pipe.pdf"] = Expect("ignored", "FIFO")
        odd_names = [
            "ctrl-\x01\x07\x1b[31m-red.pdf",
            "rtl-\u202etxt.exe.pdf",
            "dots..in..middle.pdf",
            "-rf.pdf",
            "--help.pdf",
            "L" * 251 + ".pdf",  # 255 bytes: the longest name the file system takes
            "é" * 125 + ".pdf",  # 254 bytes of UTF-8
            unicodedata.normalize("NFC", "café.pdf"),
            unicodedata.normalize("NFD", "café.pdf"),
        ]
        for index, name in enumerate(odd_names):
            put(name, make_pdf([f"odd name {index}"]), Expect("delivered"))
        too_long = "X" * 296 + ".pdf"  # 300 bytes: refused by the file system itself
        with pytest.raises(OSError, match="too long"):
            (inbox / too_long).write_bytes(b"%PDF-")
        put("..hidden.pdf", make_pdf(["hidden"]), Expect("ignored", "ignore pattern"))
        latin1 = os.fsdecode(b"latin1-\xe9.pdf")
        put(latin1, make_pdf(["latin1"]), Expect("ignored", "UTF-8"))
        final = make_pdf(["the final content"], padding=256 * 1024)
        writer = threading.Thread(
            target=write_slowly_then_truncate, args=(inbox / "truncated.pdf", final)
        )
        writer.start()
        expect["truncated.pdf"] = Expect("delivered")
        writer.join()

        base = tmp_path / "bad"
        to_deliver = [n for n, e in expect.items() if e.outcome == "delivered"]
        to_fail = [n for n, e in expect.items() if e.outcome == "failed"]

        def settled() -> bool:
            done = all((base / "done" / n).exists() for n in to_deliver)
            return done and all((base / "failed" / n).exists() for n in to_fail)

        wait_for(settled, timeout=120, interval=0.2)
        time.sleep(3)  # a rescan (every 2 s) passes over the ignored entries once more
        assert daemon.alive
        assert healthz(port) == 200

        # Delivered: one result each, under the sink root; failed: a sidecar with the reason.
        results = [json.loads(p.read_text()) for p in (base / "out").rglob("*.json")]
        by_name = {r["document"]["name"]: r for r in results}
        assert sorted(by_name) == sorted(to_deliver)
        assert len(results) == len(to_deliver)
        assert by_name["truncated.pdf"]["document"]["sha256"] == hashlib.sha256(final).hexdigest()
        for name in to_fail:
            sidecar = json.loads((base / "failed" / f"{name}.error.json").read_text())
            assert expect[name].says in sidecar["reason"], (name, sidecar["reason"])
        # Ignored: left where they are, never submitted, the rule logged (kinds) or documented.
        logged_rules = {
            line.get("doc"): line.get("rule")
            for line in daemon.log_lines()
            if line.get("event") == "file_ignored"
        }
        for name, outcome in expect.items():
            if outcome.outcome != "ignored":
                continue
            assert os.path.lexists(inbox / name), name
            if outcome.says in ("symbolic link", "FIFO"):
                assert outcome.says in (logged_rules.get(name) or ""), (name, logged_rules)
        left = sorted(os.listdir(inbox))
        assert left == sorted(n for n, e in expect.items() if e.outcome == "ignored")
        # Dropped: journaled as such, nothing moved.
        dropped = journal_rows(
            journal, "SELECT state, error FROM documents WHERE path = ?", str(victim)
        )
        assert [tuple(r) for r in dropped] == [
            ("rejected", "the file disappeared before it was uploaded")
        ]
        # Nothing submitted for the link targets outside, the links, the FIFO, the rejected ones.
        stats = emulator.stats()
        submitted = {sha for per in stats.submissions.values() for sha in per}
        assert hashlib.sha256(secret).hexdigest() not in submitted
        assert stats.executions_created == len(to_deliver)
        assert (outside / "secret.pdf").read_bytes() == secret

        # No output anywhere but the sink root, done/, failed/ and the state folder.
        allowed = ("bad/out/", "bad/done/", "bad/failed/", "state/")
        created = snapshot(tmp_path) - before
        stray = sorted(
            p
            for p in created
            if not p.startswith(allowed)
            and not p.startswith("bad/in/")
            and p not in ("bad/out", "bad/done", "bad/failed", "state", "daemon.log")
        )
        assert stray == []
        assert not [
            p
            for p in created
            if p.startswith("bad/in/") and p.removeprefix("bad/in/") not in expect
        ]
        assert daemon.stop() == 0
        assert daemon.tracebacks() == []
        report(
            "bad-input",
            entries=len(expect),
            delivered=len(to_deliver),
            failed_with_reason=len(to_fail),
            ignored_by_rule=sum(e.outcome == "ignored" for e in expect.values()),
            dropped=sum(e.outcome == "dropped" for e in expect.values()),
            unreadable_as="unprivileged" if wrapper or os.geteuid() else "root (readable)",
            stray_outputs=len(stray),
            daemon_alive=True,
            seconds=elapsed_since(started),
        )
