"""The Python examples of the Steps docs page run unchanged against the emulator.

The blocks below are copied verbatim from the page (the seed ``001`` of the spec), in page
order; the only change applied is the documented migration of the import line. They run in one
namespace, as a reader pasting them in turn would, with ``DOCUTRAY_BASE_URL`` pointing at an
emulator that accepts the docs' key ``YOUR_API_KEY``, in a folder holding ``document.pdf`` and
``invoice.pdf``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.client import Client, _polling
from docutray_watch.emulator import EmulatorServer
from docutray_watch.samples import make_pdf
from docutray_watch.testing import EmulatorFactory

MIGRATION = ("from docutray import", "from docutray_watch.client import")

DOCS_EXAMPLES: dict[str, str] = {
    "quick_start": """\
from pathlib import Path
from docutray import Client

client = Client(api_key="YOUR_API_KEY")

# Execute a step
status = client.steps.run_async(
    step_id="step_abc123",
    file=Path("document.pdf")
)

# Wait for completion
result = status.wait()

if result.is_success():
    print(result.data)
""",
    "response": """\
# status is a StepExecutionStatus
print(status.execution_id)        # "exec_abc123"
print(status.status)              # "SUCCESS"
print(status.data)                # Extracted data
print(status.original_filename)   # "document.pdf"
print(status.request_timestamp)   # When execution started
print(status.response_timestamp)  # When execution completed
""",
    "polling_and_status": """\
status = client.steps.run_async(
    step_id="step_abc123",
    file=Path("document.pdf")
)

# Wait with automatic polling
result = status.wait()

if result.is_success():
    print("Step completed successfully")
    print(result.data)
elif result.is_error():
    print(f"Step failed: {result.error}")
""",
    "manual_polling": """\
status = client.steps.get_status("exec_abc123")

if status.is_success():
    print(status.data)
elif status.status == "ENQUEUED" or status.status == "PROCESSING":
    print("Still processing...")
""",
    "input_methods": """\
# File upload
status = client.steps.run_async(
    step_id="step_abc123",
    file=Path("document.pdf")
)

# URL
status = client.steps.run_async(
    step_id="step_abc123",
    url="https://example.com/document.pdf"
)

# Base64
import base64
with open("document.pdf", "rb") as f:
    encoded = base64.b64encode(f.read()).decode()

status = client.steps.run_async(
    step_id="step_abc123",
    file_base64=encoded,
    content_type="application/pdf"
)
""",
    "complete_code": """\
from pathlib import Path
from docutray import Client, NotFoundError, DocuTrayError

client = Client(api_key="YOUR_API_KEY")

try:
    # Execute a step with metadata
    status = client.steps.run_async(
        step_id="step_abc123",
        file=Path("invoice.pdf"),
        document_metadata={"source": "email", "customer_id": "cust_456"}
    )

    print(f"Execution started: {status.execution_id}")

    # Wait for completion
    result = status.wait()

    if result.is_success():
        print("Step completed!")
        print(f"Result: {result.data}")
    elif result.is_error():
        print(f"Step failed: {result.error}")

except NotFoundError:
    print("Step not found — check the step ID")
except DocuTrayError as e:
    print(f"Error: {e.message}")
finally:
    client.close()
""",
}


@pytest.fixture(name="docs_emulator")
def docs_emulator_fixture(
    emulator_factory: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    """An emulator for the docs' key, found through DOCUTRAY_BASE_URL, and the docs' files."""
    emulator = emulator_factory(api_key="YOUR_API_KEY", latency=0.05)
    monkeypatch.setenv("DOCUTRAY_BASE_URL", emulator.base_url)
    monkeypatch.delenv("DOCUTRAY_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "document.pdf").write_bytes(make_pdf(["document"]))
    (tmp_path / "invoice.pdf").write_bytes(make_pdf(["invoice"]))
    # PDFs are polled every 3-5 s; the emulator finishes in 0.05 s, so shorten the real sleeps
    # (the schedule itself is tested in test_polling.py)
    monkeypatch.setattr(_polling, "_sleep", lambda seconds: time.sleep(min(seconds, 0.02)))
    return emulator


class TestDocsExamples:
    def test_examples_run_against_the_emulator(
        self, docs_emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every Python example on the page runs to completion and prints what it promises."""
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        outputs: dict[str, str] = {}
        for name, code in DOCS_EXAMPLES.items():
            if name == "manual_polling":
                _make_docs_execution_id_exist(docs_emulator, namespace["status"].execution_id)
            program = compile(code.replace(*MIGRATION), f"<docs example {name}>", "exec")
            exec(program, namespace)  # noqa: S102 - the docs' own example code
            outputs[name] = capsys.readouterr().out
        for value in namespace.values():
            if isinstance(value, Client):
                value.close()

        assert "'sha256'" in outputs["quick_start"]  # result.data printed
        assert outputs["response"].splitlines()[1] == "ENQUEUED"
        assert "document.pdf" in outputs["response"]
        assert outputs["polling_and_status"].startswith("Step completed successfully\n")
        assert "'sha256'" in outputs["manual_polling"]
        assert namespace["status"].status == "ENQUEUED"  # the base64 submission
        lines = outputs["complete_code"].splitlines()
        assert lines[0].startswith("Execution started: exec_")
        assert lines[1] == "Step completed!"
        assert "'customer_id': 'cust_456'" in lines[2]  # metadata went through
        stats = docs_emulator.stats(include_executions=False)
        assert stats.posts == 6  # one execution per run_async in the examples
        assert stats.responses_by_status == {200: stats.posts + stats.status_gets}


def _make_docs_execution_id_exist(emulator: EmulatorServer, existing_id: str) -> None:
    """Let the docs' hard-coded ``exec_abc123`` name an execution the emulator knows."""
    emulator.alias_execution("exec_abc123", existing_id)
