"""Tests of `docutray_watch.templates`: checked placeholders, paths that cannot escape a root."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pytest

from docutray_watch._testkit import make_document, make_record
from docutray_watch.templates import (
    MAX_COMPONENT_BYTES,
    METADATA_FIELDS,
    RECORD_FIELDS,
    TemplateError,
    check_template,
    metadata_context,
    record_context,
    render,
    render_relative_path,
    sanitize_component,
)

# Names a hostile or careless sender might give a document.
NASTY_NAMES = [
    "../../etc/passwd",
    "/etc/x",
    "..",
    ".",
    "...",
    " .. ",
    "a/../b",
    "..\\..\\windows\\system32",
    "\\\\server\\share",
    "./.",
    "a\x01b\x1fc\x7f",
    "tab\there",
    "new\nline",
    "\u202eexe.pdf",
    "\u2066isolate\u2069.pdf",
    "zero\u200bwidth",
    "line\u2028separator",
    "-rf",
    "--help",
    ".hidden",
    ".bashrc",
    "x" * 300 + ".pdf",
    "é" * 200 + ".pdf",
    "e\u0301.pdf",
    "\udcff\udcfe.pdf",  # a name that was not valid UTF-8 (os.fsdecode's surrogateescape)
    "CON",
    "~",
    "a" * 1000,
]


def name_context(value: str) -> dict[str, object]:
    """A context where every field that could come from the file name holds `value`."""
    return {
        "name": value,
        "stem": value,
        "ext": value,
        "relative_dir": value,
        "relative_path": value,
        "step_id": "stp_a",
        "pipeline": "invoices",
    }


class TestCheckTemplate:
    @pytest.mark.parametrize(
        "template",
        [
            "{stem}.json",
            "{relative_dir}/{name}",
            "plain text",
            "",
            "{{literal}}",
            "{yyyy}/{mm}/{dd}",
        ],
    )
    def test_accepts_known_plain_fields(self, template: str) -> None:
        """Templates with known fields (or none, or escaped braces) are accepted."""
        check_template(template, METADATA_FIELDS)

    @pytest.mark.parametrize(
        ("template", "reason"),
        [
            ("{unknown}", "unknown placeholder {unknown}"),
            ("{name!r}", "cannot have a format"),
            ("{size:08d}", "cannot have a format"),
            ("{name.upper}", "invalid placeholder"),
            ("{name[0]}", "invalid placeholder"),
            ("{}", "invalid placeholder"),
            ("{0}", "invalid placeholder"),
            ("{name", "invalid template"),
            ("name}", "invalid template"),
        ],
    )
    def test_rejects_unsafe_or_unknown_fields(self, template: str, reason: str) -> None:
        """Unknown fields, attribute/index access, format specs and bad syntax raise."""
        with pytest.raises(TemplateError, match=reason.replace("{", r"\{").replace("[", r"\[")):
            check_template(template, METADATA_FIELDS)

    def test_unknown_field_message_lists_known_ones(self) -> None:
        """The error lists the allowed names so the user can fix the typo."""
        with pytest.raises(TemplateError) as info:
            check_template("{stme}", {"stem", "name"})
        assert "known: name, stem" in str(info.value)

    def test_record_fields_extend_metadata_fields(self) -> None:
        """Sink templates know the step fields; metadata templates do not."""
        check_template("{step_id}-{execution_id}-{status}", RECORD_FIELDS)
        with pytest.raises(TemplateError):
            check_template("{step_id}", METADATA_FIELDS)


class TestContexts:
    def test_metadata_context_fields(self) -> None:
        """metadata_context fills every METADATA_FIELDS name from the document and the date."""
        document = make_document("scan.v2.pdf", relative_dir="2026/jan")
        context = metadata_context("invoices", document, datetime(2026, 3, 4, tzinfo=UTC))
        assert set(context) == METADATA_FIELDS
        assert (context["stem"], context["ext"]) == ("scan.v2", "pdf")
        assert context["relative_dir"] == "2026/jan"
        assert context["short_sha"] == document.sha256[:12]
        assert (context["yyyy"], context["mm"], context["dd"]) == ("2026", "03", "04")

    def test_extension_of_names_without_one(self) -> None:
        """A name without a dot, or a dot-file, has an empty {ext}."""
        when = datetime(2026, 1, 1, tzinfo=UTC)
        assert metadata_context("p", make_document("README"), when)["ext"] == ""
        assert metadata_context("p", make_document(".pdf"), when)["ext"] == ""

    def test_record_context_uses_the_completion_date(self) -> None:
        """Record templates date by completion, so a redelivery renders the same path."""
        record = make_record(completed_at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
        context = record_context(record)
        assert set(context) == RECORD_FIELDS
        assert (context["yyyy"], context["mm"], context["dd"]) == ("2025", "12", "31")
        assert context["step_id"] == record.step_id
        assert context["status"] == "SUCCESS"

    def test_render_fills_without_sanitising(self) -> None:
        """render() is plain substitution (metadata values are not paths)."""
        assert render("{name} from {pipeline}", {"name": "a/b.pdf", "pipeline": "p"}) == (
            "a/b.pdf from p"
        )


class TestSanitizeComponent:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("invoice.pdf", "invoice.pdf"),
            ("..", "_"),
            (".", "_"),
            ("", "_"),
            ("   ", "_"),
            ("a/b", "a_b"),
            ("a\\b", "a_b"),
            ("-rf", "_rf"),
            (".hidden", "_hidden"),
            ("a\x00b", "a_b"),
            ("\u202egnp.exe", "_gnp.exe"),
            ("\udcff.pdf", "_.pdf"),
        ],
    )
    def test_cleans_one_component(self, raw: str, expected: str) -> None:
        """Separators, controls, bidi marks, dot-names and a leading dash are replaced."""
        assert sanitize_component(raw) == expected

    def test_normalises_to_nfc(self) -> None:
        """A decomposed (NFD) name comes out composed (NFC), so both spellings match."""
        decomposed = unicodedata.normalize("NFD", "café.pdf")
        assert decomposed != "café.pdf"
        assert sanitize_component(decomposed) == "café.pdf"

    def test_long_name_keeps_its_extension(self) -> None:
        """A 300-byte name is cut to at most 255 bytes, keeping `.pdf`."""
        result = sanitize_component("x" * 300 + ".pdf")
        assert len(result.encode()) <= MAX_COMPONENT_BYTES
        assert result.endswith(".pdf")
        assert result.startswith("x" * 200)

    def test_cut_never_splits_a_character(self) -> None:
        """Cutting multi-byte text yields valid UTF-8 that still ends with the extension."""
        result = sanitize_component("é" * 200 + ".pdf")
        encoded = result.encode("utf-8")
        assert len(encoded) <= MAX_COMPONENT_BYTES
        assert encoded.decode("utf-8") == result
        assert result.endswith(".pdf")

    def test_long_extension_is_not_kept(self) -> None:
        """An absurd 'extension' is cut like the rest of the name."""
        result = sanitize_component("a." + "b" * 400)
        assert len(result.encode()) <= MAX_COMPONENT_BYTES
        assert result.startswith("a.")


class TestRenderRelativePath:
    def test_default_layout(self) -> None:
        """The filesystem sink's default template renders folder/stem.sha.step.json."""
        record = make_record(name="inv.pdf", relative_dir="2026/q1")
        path = render_relative_path(
            "{relative_dir}/{stem}.{short_sha}.{step_id}.json", record_context(record)
        )
        assert path == PurePosixPath(
            f"2026/q1/inv.{record.document.sha256[:12]}.{record.step_id}.json"
        )

    def test_empty_relative_dir_leaves_no_empty_component(self) -> None:
        """A document at the top of the inbox has no folder part (no leading `/`)."""
        assert render_relative_path(
            "{relative_dir}/{name}", name_context("a.pdf") | {"relative_dir": ""}
        ) == PurePosixPath("a.pdf")

    def test_relative_dir_keeps_sub_folders_but_sanitises_each(self) -> None:
        """{relative_dir} keeps its folders; `..`, dot- and dash-names inside it are neutralised."""
        context = {"relative_dir": "a/../b/./-c/.d/\u202ee", "name": "x.pdf"}
        assert render_relative_path("{relative_dir}/{name}", context) == PurePosixPath(
            "a/_/b/_c/_d/_e/x.pdf"
        )

    def test_name_with_slashes_is_one_component(self) -> None:
        """A `/` inside {name} never creates a folder."""
        path = render_relative_path("{name}", {"name": "../../etc/passwd"})
        assert len(path.parts) == 1
        assert path.parts[0] == "_._.._etc_passwd"

    def test_absolute_looking_template_becomes_relative(self) -> None:
        """A template starting with `/` still renders a relative path."""
        path = render_relative_path("/{name}", {"name": "/etc/x"})
        assert path == PurePosixPath("_etc_x")

    def test_dot_dot_in_the_template_itself_is_neutralised(self) -> None:
        """A literal `..` component in a template cannot climb out of the root."""
        path = render_relative_path("x/../../{name}", {"name": "a"})
        assert ".." not in path.parts
        assert not path.is_absolute()

    def test_empty_result_is_an_error(self) -> None:
        """A template rendering to nothing raises instead of writing to the root itself."""
        with pytest.raises(TemplateError, match="empty path"):
            render_relative_path("{relative_dir}", {"relative_dir": ""})

    @pytest.mark.parametrize(
        "template",
        [
            "{name}",
            "{relative_dir}/{name}",
            "{stem}.{step_id}.json",
            "{relative_path}.json",
            "out/{ext}/{name}",
        ],
    )
    def test_nasty_names_never_escape(self, template: str) -> None:
        """For every hostile name: relative, no `..`, no control or bidi characters, ≤255 bytes."""
        for name in NASTY_NAMES:
            path = render_relative_path(template, name_context(name))
            where = f"{template!r} with {name!r} gave {path!r}"
            assert not path.is_absolute(), where
            assert path.parts, where
            for part in path.parts:
                assert part not in ("", ".", ".."), where
                assert not part.startswith(("-", ".")), where
                assert len(part.encode("utf-8")) <= MAX_COMPONENT_BYTES, where
                assert part == unicodedata.normalize("NFC", part), where
                assert not any(
                    unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in part
                ), where
            assert "\\" not in str(path), where
