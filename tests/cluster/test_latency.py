"""The latency model across nodes: estimates merged into the PostgreSQL journal as they are
learned, and read from it for the first status read of an execution on any node."""

from __future__ import annotations

from pathlib import Path

import pytest

from docutray_watch.journal import DocumentRow, StepRow, StepState
from docutray_watch.testing import EmulatorFactory, ManualClock
from tests.cluster.nodekit import HandNode, hand_node, query, shared_config

pytestmark = pytest.mark.postgres

LATENCY = 3.0


async def _queued(node: HandNode, root: Path, name: str) -> tuple[DocumentRow, StepRow]:
    path = root / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.4\n" + name.encode() * 30)
    st = path.stat()
    doc, steps = await node.store.add_queued(
        "invoices",
        str(path),
        name,
        sha256=f"{abs(hash(name)):064x}",
        content_type="application/pdf",
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        steps=["stp_test"],
    )
    return doc, steps[0]


def _first_read_in(url: str, step: StepRow) -> float:
    """Seconds from now until the waiting poll job of this step runs."""
    [(seconds,)] = query(
        url,
        "SELECT extract(epoch FROM scheduled_at - now()) FROM procrastinate_jobs"
        " WHERE task_name = 'dtw.poll' AND status = 'todo' AND (args->>'step_row')::bigint = %s",
        step.id,
    )
    return float(seconds)


def _estimates(url: str) -> list[tuple[str, int, int, float]]:
    return [
        (str(s), int(k), int(n), round(float(m), 3))
        for s, k, n, m in query(
            url, "SELECT step_id, size_class, count, mean FROM docutray.step_latency"
        )
    ]


async def _run_to_the_end(node: HandNode, clock: ManualClock, root: Path, name: str) -> None:
    doc, step = await _queued(node, root, name)
    await node.jobs._submit(doc.id, step.id, holder=None)
    clock.advance(LATENCY)
    await node.jobs._poll(doc.id, step.id, holder=None)
    assert (await node.store.step(step.id)).state == StepState.SUCCESS


async def test_the_first_read_on_one_node_uses_what_another_learned(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """Node n2, started before anything was learned, first reads at `poll.initial`; once n1 has
    seen an execution end, n2's next submission schedules its first read at n1's estimate."""
    clock = ManualClock()
    emulator = emulator_factory(latency=LATENCY, clock=clock)
    poll = {"initial": 0.2, "max": 0.5}
    configs = [shared_config(tmp_path, initialised_url, emulator, n, poll=poll) for n in "ab"]
    async with hand_node(configs[0]) as n1, hand_node(configs[1]) as n2:
        doc, step = await _queued(n2, tmp_path, "before.pdf")
        await n2.jobs._submit(doc.id, step.id, holder=None)
        assert _first_read_in(initialised_url, step) <= 0.2  # nothing known: poll.initial

        await _run_to_the_end(n1, clock, tmp_path, "learned.pdf")
        assert _estimates(initialised_url) == [("stp_test", 0, 1, LATENCY)]

        doc, step = await _queued(n2, tmp_path, "after.pdf")
        await n2.jobs._submit(doc.id, step.id, holder=None)
        assert LATENCY - 0.5 < _first_read_in(initialised_url, step) <= LATENCY + 0.1


async def test_estimates_learned_on_two_nodes_both_count(
    tmp_path: Path, initialised_url: str, emulator_factory: EmulatorFactory
) -> None:
    """Observations on two nodes are merged into one row (neither overwrites the other), and a
    node stopping does not write its own view over the cluster's."""
    clock = ManualClock()
    emulator = emulator_factory(latency=LATENCY, clock=clock)
    configs = [shared_config(tmp_path, initialised_url, emulator, n) for n in "ab"]
    async with hand_node(configs[0]) as n1:
        async with hand_node(configs[1]) as n2:
            await _run_to_the_end(n1, clock, tmp_path, "one.pdf")
            await _run_to_the_end(n2, clock, tmp_path, "two.pdf")
            assert _estimates(initialised_url) == [("stp_test", 0, 2, LATENCY)]
        await _run_to_the_end(n1, clock, tmp_path, "three.pdf")
    assert _estimates(initialised_url) == [("stp_test", 0, 3, LATENCY)]
