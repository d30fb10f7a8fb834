"""Tests of `docutray_watch.log`: JSON/console output and redaction of secrets everywhere."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from docutray_watch import log as log_module
from docutray_watch.log import REDACTED, configure_logging, redact, register_secret

CANARY = "dtk_live_CANARY_0123456789abcdefghijklmnopqrstuvwxyz_0123456789"
# Longer than a console line: a renderer that wraps lines could split it past the final scrub.
LONG_CANARY = "dtk_session_" + "Zq8" * 40


class TtyStream(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True, name="reset_logging")
def reset_logging_fixture() -> Iterator[None]:
    """Restore the root logger, structlog and the registered secrets after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "botocore", "watchdog")}
    secrets = set(log_module._secrets)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in noisy.items():
        logging.getLogger(name).setLevel(value)
    structlog.reset_defaults()
    log_module._secrets.clear()
    log_module._secrets.update(secrets)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the stream parsed as one JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def fail_with_secret_in_a_local() -> None:
    """Raise an error while a local variable holds a secret built at run time."""
    local_secret = "LOCAL" + "CANARY" + "-" + "7" * 12  # never written out literally
    raise ValueError(f"request failed after {len(local_secret)} attempts")


class TestJsonOutput:
    def test_one_json_object_per_line(self) -> None:
        """fmt=json writes one JSON object per event with level, logger, timestamp and fields."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        logger = structlog.get_logger("docutray_watch.engine")
        logger.info("document_submitted", pipeline="invoices", doc="a.pdf", execution_id="e1")
        logger.warning("sink_retrying", sink="files", attempt=2)
        first, second = json_lines(stream)
        assert first["event"] == "document_submitted"
        assert (first["level"], first["logger"]) == ("info", "docutray_watch.engine")
        assert (first["pipeline"], first["doc"], first["execution_id"]) == (
            "invoices",
            "a.pdf",
            "e1",
        )
        assert first["timestamp"].endswith("Z")
        assert (second["event"], second["level"], second["attempt"]) == (
            "sink_retrying",
            "warning",
            2,
        )

    def test_auto_is_json_when_not_a_terminal(self) -> None:
        """fmt=auto writes JSON lines to a stream that is not a TTY (journald, files)."""
        stream = io.StringIO()
        configure_logging("info", "auto", stream=stream)
        structlog.get_logger("x").info("started")
        assert json_lines(stream)[0]["event"] == "started"

    def test_auto_is_console_on_a_terminal(self) -> None:
        """fmt=auto writes readable text (not JSON) to a terminal."""
        stream = TtyStream()
        configure_logging("info", "auto", stream=stream)
        structlog.get_logger("x").info("started", pipeline="p")
        text = stream.getvalue()
        assert "started" in text
        assert not text.lstrip().startswith("{")

    def test_console_shows_12_hex_digits_of_a_sha256(self) -> None:
        """On a terminal a sha256 field shows its first 12 hex digits; JSON lines keep all 64."""
        digest = "5574270d0a90f02848ebd578ee2dcfacaae01cd5390320979838d80173058452"
        stream = TtyStream()
        configure_logging("info", "auto", stream=stream)
        structlog.get_logger("x").warning("document_failed", doc_sha256=digest, sha256=digest)
        text = stream.getvalue()
        assert digest not in text
        assert text.count(digest[:12]) == 2
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        structlog.get_logger("x").warning("document_failed", doc_sha256=digest)
        assert json_lines(stream)[0]["doc_sha256"] == digest

    def test_standard_library_logs_share_the_format(self) -> None:
        """Records from stdlib loggers (httpx, boto…) come out as JSON lines too."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        logging.getLogger("some.library").warning("disk at %d%%", 93)
        (line,) = json_lines(stream)
        assert (line["event"], line["level"], line["logger"]) == (
            "disk at 93%",
            "warning",
            "some.library",
        )

    def test_level_filters(self) -> None:
        """Below the configured level nothing is written; noisy libraries need warning."""
        stream = io.StringIO()
        configure_logging("warning", "json", stream=stream)
        structlog.get_logger("x").info("hidden")
        structlog.get_logger("x").error("shown")
        assert [line["event"] for line in json_lines(stream)] == ["shown"]
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        logging.getLogger("httpx").info("HTTP Request: GET ...")
        assert stream.getvalue() == ""


class TestRedaction:
    def register(self) -> None:
        register_secret(CANARY)

    def test_secret_in_message_fields_and_nested_values(self) -> None:
        """A registered secret is masked in the event, a field, and nested dicts and lists."""
        self.register()
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        structlog.get_logger("x").info(
            f"key is {CANARY}",
            url=f"https://api.example/?key={CANARY}",
            nested={"list": [CANARY, {"deep": f"x{CANARY}y"}], "tuple": (CANARY,)},
        )
        output = stream.getvalue()
        assert CANARY not in output
        (line,) = json_lines(stream)
        assert line["event"] == f"key is {REDACTED}"
        assert line["url"] == f"https://api.example/?key={REDACTED}"
        assert line["nested"] == {
            "list": [REDACTED, {"deep": f"x{REDACTED}y"}],
            "tuple": [REDACTED],
        }

    def test_secret_in_an_exception_and_its_traceback(self) -> None:
        """log.exception with the secret in the error message never writes the secret."""
        self.register()
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        try:
            raise RuntimeError(f"401 for key {CANARY}")
        except RuntimeError:
            structlog.get_logger("x").exception("request_failed")
        output = stream.getvalue()
        assert CANARY not in output
        (line,) = json_lines(stream)
        assert "exception" in line
        assert REDACTED in json.dumps(line["exception"])

    def test_secret_in_a_stdlib_record(self) -> None:
        """A secret passed as a %-argument to a stdlib logger is masked too."""
        self.register()
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        logging.getLogger("lib").warning("using %s", CANARY)
        assert CANARY not in stream.getvalue()
        assert json_lines(stream)[0]["event"] == f"using {REDACTED}"

    @pytest.mark.parametrize(
        "name", ["api_key", "Authorization", "password", "token", "x-api-key", "secret"]
    )
    def test_secret_named_fields_are_masked(self, name: str) -> None:
        """Fields named like secrets are masked whatever they hold, also inside dicts."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        structlog.get_logger("x").info("request", **{name: "s3cr3t-value"}, headers={name: "v"})
        (line,) = json_lines(stream)
        assert line[name] == REDACTED
        assert line["headers"] == {name: REDACTED}
        assert "s3cr3t-value" not in stream.getvalue()

    def test_tracebacks_show_no_local_variables(self) -> None:
        """A local variable of a raising function never reaches the log."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        try:
            fail_with_secret_in_a_local()
        except ValueError:
            structlog.get_logger("x").exception("failed")
        output = stream.getvalue()
        assert "fail_with_secret_in_a_local" in output  # the traceback is there…
        assert "LOCALCANARY" not in output  # …without the frame's variables

    def test_console_mode_redacts(self) -> None:
        """The console renderer masks secrets in fields, messages and (long) tracebacks."""
        self.register()
        register_secret(LONG_CANARY)
        stream = TtyStream()
        configure_logging("info", "console", stream=stream)
        logger = structlog.get_logger("x")
        logger.info("request", api_key="abc", note=f"key={CANARY}")
        try:
            raise RuntimeError(f"the service refused {CANARY} and {LONG_CANARY} with a 401")
        except RuntimeError:
            logger.exception("request_failed")
        try:
            fail_with_secret_in_a_local()
        except ValueError:
            logger.exception("failed")
        output = stream.getvalue()
        assert CANARY not in output
        assert LONG_CANARY[:40] not in output  # no fragment either (a wrapped line, say)
        assert LONG_CANARY[-40:] not in output
        assert "LOCALCANARY" not in output
        assert "api_key=abc" not in output
        assert REDACTED in output

    def test_overlapping_secrets_leave_no_fragment(self) -> None:
        """When one secret contains another, the longer one is masked whole."""
        register_secret("abcd-short")
        register_secret("abcd-short-and-then-much-longer")
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        structlog.get_logger("x").info("k=abcd-short-and-then-much-longer")
        assert json_lines(stream)[0]["event"] == f"k={REDACTED}"

    def test_short_or_empty_values_are_not_registered(self) -> None:
        """Registering None, '' or a 3-character value masks nothing (it would mask everything)."""
        for value in (None, "", "abc"):
            register_secret(value)
        assert redact(None, "info", {"event": "abc def"}) == {"event": "abc def"}

    def test_redact_processor_alone(self) -> None:
        """The processor masks names case-insensitively and values inside containers."""
        self.register()
        event = redact(
            None, "info", {"event": "e", "API_KEY": "x", "data": {"Cookie": "c", "v": [CANARY]}}
        )
        assert event == {
            "event": "e",
            "API_KEY": REDACTED,
            "data": {"Cookie": REDACTED, "v": [REDACTED]},
        }


class TestOutputStream:
    def test_lines_from_structlog_and_stdlib_threads_never_interleave(self) -> None:
        """Our events and library records written from many threads stay whole lines."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)

        def ours(n: int) -> None:
            for i in range(200):
                structlog.get_logger("ours").info("event", n=n, i=i, pad="x" * 300)

        def theirs(n: int) -> None:
            for i in range(200):
                logging.getLogger("lib").warning("record %d %d %s", n, i, "y" * 300)

        threads = [threading.Thread(target=f, args=(n,)) for n in range(3) for f in (ours, theirs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = json_lines(stream)
        assert len(lines) == 6 * 200
        assert sum(1 for line in lines if line["logger"] == "ours") == 3 * 200

    def test_a_broken_stream_does_not_raise(self) -> None:
        """Logging to a closed stream (stderr of a dead pipe) never stops the caller."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        stream.close()
        structlog.get_logger("x").info("into the void")
        structlog.get_logger("x").error("still fine")

    def test_a_logger_without_a_name_is_named_after_its_module(self) -> None:
        """structlog.get_logger() with no name (as a plugin might) logs its caller's module."""
        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        structlog.get_logger().info("unnamed")
        assert json_lines(stream)[0]["logger"] == __name__
