"""`{placeholder}` templates for output names, object keys and document metadata — made safe.

Templates use `str.format` syntax with a fixed set of field names (no attribute access, no
indexing, no format specs), checked when the config is loaded. Rendering a *path* template
sanitises every component so that nothing a document's name contains (`..`, `/`, NUL, control or
bidi characters, a leading `-`, 300-byte names) can escape the sink's root or confuse a terminal.
"""

from __future__ import annotations

import functools
import string
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePosixPath

from docutray_watch.records import Document, ResultRecord

__all__ = [
    "METADATA_FIELDS",
    "RECORD_FIELDS",
    "TemplateError",
    "check_template",
    "metadata_context",
    "record_context",
    "render",
    "render_relative_path",
    "sanitize_component",
]

# Fields known for a document before it is submitted (document_metadata templates).
METADATA_FIELDS = frozenset(
    {
        "name",
        "stem",
        "ext",
        "relative_dir",
        "relative_path",
        "pipeline",
        "sha256",
        "short_sha",
        "size",
        "content_type",
        "yyyy",
        "mm",
        "dd",
    }
)
# Fields known once a step has a result (sink names, prefixes, keys).
RECORD_FIELDS = METADATA_FIELDS | {"step_id", "execution_id", "status"}

MAX_COMPONENT_BYTES = 255

# Characters that reorder or hide text (Trojan-Source style) are never written into a name.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


# Controls, format characters, line/paragraph separators, and lone surrogates (how Python spells
# the bytes of a file name that is not valid UTF-8; they cannot be encoded, so never written).
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template uses an unknown field or is not valid `str.format` syntax."""


def check_template(template: str, allowed: Iterable[str]) -> None:
    """Raise `TemplateError` unless `template` only uses plain `{field}`s from `allowed`."""
    allowed = frozenset(allowed)
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"invalid template {template!r}: {exc}") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "" or not field.isidentifier():
            raise TemplateError(
                f"invalid placeholder {{{field}}} in {template!r}: use a name such as {{stem}}"
            )
        if spec or conversion:
            raise TemplateError(f"placeholder {{{field}}} in {template!r} cannot have a format")
        if field not in allowed:
            raise TemplateError(
                f"unknown placeholder {{{field}}} in {template!r}; known: "
                + ", ".join(sorted(allowed))
            )


def render(template: str, context: Mapping[str, object]) -> str:
    """Fill a template checked by `check_template` (no sanitising: for metadata values)."""
    return template.format_map(context)


def _ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext if dot and stem else ""


def _date_fields(moment: datetime) -> dict[str, str]:
    return {"yyyy": f"{moment.year:04d}", "mm": f"{moment.month:02d}", "dd": f"{moment.day:02d}"}


def metadata_context(pipeline: str, document: Document, now: datetime) -> dict[str, object]:
    """Template fields for a document about to be submitted."""
    return {
        "name": document.name,
        "stem": document.stem,
        "ext": _ext(document.name),
        "relative_dir": document.relative_dir,
        "relative_path": document.relative_path,
        "pipeline": pipeline,
        "sha256": document.sha256,
        "short_sha": document.sha256[:12],
        "size": document.size,
        "content_type": document.content_type,
        **_date_fields(now),
    }


def record_context(record: ResultRecord) -> dict[str, object]:
    """Template fields for a result; dates are the completion date, so redelivery is stable."""
    context = metadata_context(record.pipeline, record.document, record.completed_at)
    context.update(step_id=record.step_id, execution_id=record.execution_id, status=record.status)
    return context


def sanitize_component(value: str, *, replacement: str = "_") -> str:
    """One safe path component: no separators, controls, bidi marks, dot-names or leading dash."""
    value = unicodedata.normalize("NFC", value)
    cleaned = []
    for char in value:
        if char in "/\\" or char in _BIDI_CONTROLS or unicodedata.category(char) in _UNSAFE:
            cleaned.append(replacement)
        else:
            cleaned.append(char)
    result = "".join(cleaned).strip()
    if result in ("", ".", ".."):
        return replacement
    if result[0] in "-.":
        # A leading dash reads as an option to shell tools; a leading dot hides the file.
        result = replacement + result[1:]
    return _truncate_utf8(result, MAX_COMPONENT_BYTES)


def _truncate_utf8(value: str, limit: int) -> str:
    encoded = value.encode("utf-8")
    if len(encoded) <= limit:
        return value
    stem, dot, ext = value.rpartition(".")
    suffix = f".{ext}" if dot and stem and len(ext.encode()) <= 16 else ""
    head = encoded[: limit - len(suffix.encode())].decode("utf-8", errors="ignore")
    return head + suffix


@functools.lru_cache(maxsize=64)
def _fields_of(template: str) -> frozenset[str]:
    return frozenset(name for _text, name, _spec, _conv in _FORMATTER.parse(template) if name)


def render_relative_path(template: str, context: Mapping[str, object]) -> PurePosixPath:
    """Render a path template into a relative path whose every component is sanitised.

    `{relative_dir}` keeps its folder structure (each folder sanitised); every other value is one
    component. Empty components (`a//b`, a leading `/`) disappear, so the result is always relative
    and never contains `..`.
    """
    safe: dict[str, str] = {}
    used = _fields_of(template)
    for key, value in context.items():
        if key not in used:
            continue  # sanitising costs a Unicode lookup per character: only what is used
        text = str(value)
        if key in ("relative_dir", "relative_path"):
            parts = [sanitize_component(p) for p in text.split("/") if p not in ("", ".")]
            safe[key] = "/".join(parts)
        else:
            safe[key] = sanitize_component(text) if text else ""
    rendered = template.format_map(safe)
    parts = [sanitize_component(p) for p in rendered.replace("\\", "/").split("/") if p]
    if not parts:
        raise TemplateError(f"template {template!r} rendered an empty path")
    return PurePosixPath(*parts)
