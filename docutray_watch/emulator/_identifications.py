"""Emulated identification: which document type a document is, decided from the document alone.

The type comes from a ``DOCUTRAY-EMULATOR:TYPE=<code>`` marker, else from the content type
(``identify_by_content_type``), else it is the first configured type; the confidence from a
``DOCUTRAY-EMULATOR:CONFIDENCE=<0..1>`` marker, else ``identify_confidence``. The alternatives
are the next candidates, sharing what confidence is left. ``document_type_code_options`` limits
the candidates (a marker or rule outside them is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docutray_watch.emulator._documents import Document
from docutray_watch.emulator._errors import ApiError
from docutray_watch.emulator._executions import Outcome, Status, status_at
from docutray_watch.emulator._timestamps import iso_utc
from docutray_watch.emulator.config import DocumentTypeSpec, EmulatorConfig

MAX_ALTERNATIVES = 2
"""Alternatives listed beside the identified type."""


def _match(spec: DocumentTypeSpec, confidence: float) -> dict[str, Any]:
    return {"code": spec.code, "name": spec.name, "confidence": round(confidence, 4)}


def classify(document: Document, config: EmulatorConfig) -> dict[str, Any]:
    """``document_type`` and ``alternatives`` for `document` (400 for unknown candidate codes)."""
    candidates = list(config.document_types)
    if document.code_options is not None:
        unknown = [code for code in document.code_options if config.document_type(code) is None]
        if unknown:
            raise ApiError(400, f"Unknown document type code(s): {', '.join(unknown)}")
        candidates = [spec for spec in candidates if spec.code in document.code_options]
    marked = document.markers.document_type
    chosen: DocumentTypeSpec | None = None
    if marked is not None:
        chosen = next((spec for spec in candidates if spec.code == marked), None)
        if chosen is None and document.code_options is None:
            # A type the account does not list: answered as is, so tests can route on anything.
            chosen = DocumentTypeSpec(code=marked, name=marked)
    if chosen is None:
        by_type = config.identify_by_content_type.get(document.content_type)
        chosen = next((spec for spec in candidates if spec.code == by_type), candidates[0])
    confidence = document.markers.confidence
    if confidence is None:
        confidence = config.identify_confidence
    others = [spec for spec in candidates if spec.code != chosen.code][:MAX_ALTERNATIVES]
    rest = 1.0 - confidence
    alternatives = [_match(spec, rest / 2 ** (rank + 1)) for rank, spec in enumerate(others)]
    return {"document_type": _match(chosen, confidence), "alternatives": alternatives}


@dataclass(slots=True)
class Identification:
    """An asynchronous identification; mutated only under the emulator state's lock."""

    identification_id: str
    document: Document
    created_at: float
    created_at_wall: float
    latency: float
    outcome: Outcome
    result: dict[str, Any]
    error_message: str | None = None
    status_reads: int = 0

    def status_at(self, now: float) -> Status:
        """The status the identification has at clock time `now`."""
        return status_at(self.created_at, self.latency, self.outcome, now)

    def accepted_body(self, id_field: str) -> dict[str, Any]:
        """The answer to the submission."""
        return {
            id_field: self.identification_id,
            "status": "ENQUEUED",
            "status_url": f"/api/identify-async/status/{self.identification_id}",
            "original_filename": self.document.original_filename,
            "request_timestamp": iso_utc(self.created_at_wall),
        }

    def status_body(self, status: Status, id_field: str) -> dict[str, Any]:
        """The answer to a status read that saw `status`."""
        body = self.accepted_body(id_field)
        body["status"] = status
        if status in ("SUCCESS", "ERROR"):
            body["response_timestamp"] = iso_utc(self.created_at_wall + self.latency)
        if status == "SUCCESS":
            body.update(self.result)
        elif status == "ERROR":
            body["error"] = self.error_message
        return body
