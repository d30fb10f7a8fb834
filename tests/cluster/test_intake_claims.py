"""A cluster node's intake: content another document claims (in a node's own folders' batches and
the shared intake job), `duplicates: reprocess` in a new generation, and plugins' `ignore_document`
for shared folders. Jobs run by hand on the real PostgreSQL, against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from docutray_watch import intake
from docutray_watch.cluster.handoff import ClusterHandoff
from docutray_watch.config import Config
from docutray_watch.emulator import EmulatorServer
from docutray_watch.hookspecs import hookimpl
from docutray_watch.journal import DocumentRow, StepState
from docutray_watch.testing import EmulatorFactory, ManualClock
from tests.cluster.nodekit import HandNode, hand_node, query, shared_config, waiting_jobs

pytestmark = pytest.mark.postgres


def _config(
    root: Path, url: str, emulator: EmulatorServer, *, shared: bool, duplicates: str
) -> Config:
    config = shared_config(root, url, emulator, "a", watch={"settle": 0, "shared": shared})
    config.pipelines[0].duplicates = duplicates  # type: ignore[assignment]
    return config


def _write(root: Path, name: str, content: bytes) -> Path:
    path = root / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


async def _take(node: HandNode, *paths: Path) -> None:
    """Journal these files of the node's own folder as ONE intake batch, and commit the first
    jobs its handoff defers."""
    ready = [("invoices", intake.Candidate(p, p.name), p.lstat()) for p in paths]
    await node.engine.discovery._take(ready)
    handoff = node.engine.discovery.handoff
    assert isinstance(handoff, ClusterHandoff)
    await handoff.flush()


async def _by_name(node: HandNode) -> dict[str, DocumentRow]:
    return {doc.name: doc for doc in await node.store.unfinished_documents()}


def _queues(url: str) -> list[tuple[str, str]]:
    rows = query(
        url,
        "SELECT task_name, queue_name FROM procrastinate_jobs WHERE status = 'todo' ORDER BY id",
    )
    return [(str(task), str(queue)) for task, queue in rows]


async def test_a_batch_with_claimed_content_journals_it_as_a_duplicate_and_the_rest_queued(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """In a node's own folder, a batch holding one file whose content another document is
    processing and three new files is journaled in one go: the three queued (their submits
    deferred), the claimed one a `duplicate` of the holder (its final action deferred)."""
    config = _config(tmp_path, initialised_url, emulator_factory(), shared=False, duplicates="skip")
    async with hand_node(config) as node:
        held = _write(tmp_path, "held.pdf", b"%PDF-1.4\nheld content")
        await _take(node, held)
        copy = _write(tmp_path, "copy.pdf", b"%PDF-1.4\nheld content")
        fresh = [_write(tmp_path, f"n{n}.pdf", b"%PDF-1.4\n" + bytes([n]) * 9) for n in range(3)]
        await _take(node, fresh[0], copy, fresh[1], fresh[2])
        docs = await _by_name(node)
        assert {name: doc.state for name, doc in docs.items()} == {
            "held.pdf": "queued",
            "copy.pdf": "duplicate",
            "n0.pdf": "queued",
            "n1.pdf": "queued",
            "n2.pdf": "queued",
        }
        assert docs["copy.pdf"].duplicate_of == docs["held.pdf"].id
        jobs = _queues(initialised_url)
        assert sorted(jobs) == sorted([("dtw.submit", "node.a")] * 4 + [("dtw.finalize", "node.a")])


async def _process(node: HandNode, clock: ManualClock, path: Path) -> DocumentRow:
    """Take a shared-folder file through every job by hand, to its end."""
    await node.jobs._intake("invoices", str(path), path.name)
    doc = (await _by_name(node))[path.name]
    (step,) = await node.store.steps_of(doc.id)
    await node.jobs._submit(doc.id, step.id, holder=None)
    clock.advance(1.0)
    await node.jobs._poll(doc.id, step.id, holder=None)
    assert (await node.store.step(step.id)).state == StepState.SUCCESS
    await node.jobs._deliver(doc.id, holder=None)
    await node.jobs._finalize(doc.id, holder=None)
    return await node.store.document(doc.id)


@pytest.mark.parametrize("duplicates", ["reprocess", "skip"])
async def test_processed_content_arriving_again_follows_the_duplicates_setting(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory, duplicates: str
) -> None:
    """Content processed once arrives again in another file of a shared folder: with
    `duplicates: reprocess` it is queued in the content's next generation and submitted again;
    with `duplicates: skip` it is a duplicate of the first and nothing is submitted."""
    clock = ManualClock()
    emulator = emulator_factory(latency=0.2, clock=clock)
    config = _config(tmp_path, initialised_url, emulator, shared=True, duplicates=duplicates)
    async with hand_node(config) as node:
        first = await _process(node, clock, _write(tmp_path, "x.pdf", b"%PDF-1.4\nsame"))
        assert (first.state, emulator.stats().posts) == ("archived", 1)
        again = _write(tmp_path, "y.pdf", b"%PDF-1.4\nsame")
        before = len(waiting_jobs(initialised_url))  # the first file's, run by hand above
        await node.jobs._intake("invoices", str(again), "y.pdf")
        deferred = [task for task, _ in waiting_jobs(initialised_url)[before:]]
        doc = (await _by_name(node))["y.pdf"]
        [(generation,)] = query(
            initialised_url, "SELECT generation FROM docutray.documents WHERE id = %s", doc.id
        )
        if duplicates == "skip":
            assert (doc.state, doc.duplicate_of, generation) == ("duplicate", first.id, 0)
            assert deferred == ["dtw.finalize"]
            return
        assert (doc.state, generation) == ("queued", 1)
        assert deferred == ["dtw.submit"]
        (step,) = await node.store.steps_of(doc.id)
        await node.jobs._submit(doc.id, step.id, holder=None)
        assert emulator.stats().posts == 2


def _intakes(url: str) -> list[str]:
    return [str(args["relative_path"]) for task, args in waiting_jobs(url) if task == "dtw.intake"]


class IgnoreDrafts:
    """A plugin that leaves drafts alone while `active`."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.active = True

    @hookimpl
    def ignore_document(self, pipeline: str, path: Path) -> str | None:
        self.asked.append(path.name)
        return "a draft" if self.active and path.name.startswith("draft") else None


async def test_a_shared_file_a_plugin_ignores_is_not_taken(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """A complete shared-folder file that a plugin's `ignore_document` leaves alone is not
    taken (no source identity, no intake), said once however many scans ask; the plugin is
    asked again at each scan, and once it lets the file be, the file is taken."""
    config = _config(tmp_path, initialised_url, emulator_factory(), shared=True, duplicates="skip")
    async with hand_node(config) as node:
        plugin = IgnoreDrafts()
        node.engine.ctx.pm.register(plugin, name="ignore-drafts")
        _write(tmp_path, "draft.pdf", b"%PDF-1.4\ndraft")
        _write(tmp_path, "final.pdf", b"%PDF-1.4\nfinal")
        with capture_logs() as logs:
            await node.jobs._scan_shared(0)
            await node.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["final.pdf"]
        ignored = [e for e in logs if e["event"] == "file_ignored"]
        assert [(e["doc"], e["rule"]) for e in ignored] == [("draft.pdf", "plugin: a draft")]
        assert plugin.asked.count("draft.pdf") == 2
        assert list(node.engine.ctx.summary.ignored) == [
            ("invoices", str(tmp_path / "inbox" / "draft.pdf"), "plugin: a draft")
        ]
        sources = query(initialised_url, "SELECT path FROM docutray.source_identity")
        assert [Path(p).name for (p,) in sources] == ["final.pdf"]

        plugin.active = False
        await node.jobs._scan_shared(0)
        assert _intakes(initialised_url) == ["final.pdf", "draft.pdf"]
