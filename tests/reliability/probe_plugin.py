"""A plugin the reliability suite installs into the daemon under test (never shipped).

It registers the `probe` sink: one JSON file per record key under `path`, written atomically, so a
test can count what arrived. The sink fails on purpose while the file `fail_while` exists, or
always (`always_fail`), in one of three ways: a `SinkError`, an `OSError(ENOSPC)` (a full disk)
or a `RuntimeError` whose message quotes the API key, raised from a frame whose local variables
hold it (`secret`).

With `DOCUTRAY_RELIABILITY_CANARY_HOOKS=1` in the daemon's environment the plugin also captures
the API key at `startup` and raises, with the key in a local variable, from
`before_document_submit` — an exception path whose traceback must not show it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from docutray_watch.config import Config, api_key_of
from docutray_watch.fsutil import atomic_write_bytes
from docutray_watch.hookspecs import hookimpl
from docutray_watch.records import Document, ResultRecord
from docutray_watch.sinks.base import ConfigPath, Receipt, Sink, SinkConfig, SinkError

CANARY_HOOKS_ENV = "DOCUTRAY_RELIABILITY_CANARY_HOOKS"

# The API key, captured at startup by the canary hooks (only when they are enabled).
_captured_key: list[str] = []


class ProbeConfig(SinkConfig):
    """Options of the probe sink."""

    path: ConfigPath = Field(description="Folder of the record files.")
    fail_while: ConfigPath | None = Field(None, description="Fail every call while this exists.")
    always_fail: bool = Field(False, description="Fail every call.")
    failure: Literal["error", "enospc", "secret"] = Field("error", description="How to fail.")


class ProbeSink(Sink[ProbeConfig]):
    """Writes each record to `<path>/<sha256>.<step_id>.json`, or fails on purpose."""

    type = "probe"
    description = "Reliability-suite probe: one file per record, failures on demand."
    config_model = ProbeConfig

    def _failing(self) -> bool:
        flag = self.config.fail_while
        return self.config.always_fail or (flag is not None and flag.exists())

    def _fail(self, call: str) -> None:
        if self.config.failure == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.config.path))
        if self.config.failure == "secret":
            _explode_holding_the_key(call)
        raise SinkError(f"probe sink: {call} fails on purpose")

    def open(self) -> None:
        """Create the folder (or fail on purpose)."""
        if self._failing():
            self._fail("open")
        self.config.path.mkdir(parents=True, exist_ok=True)

    def deliver(self, record: ResultRecord) -> Receipt:
        """Write the record's file (or fail on purpose)."""
        if self._failing():
            self._fail("deliver")
        self.config.path.mkdir(parents=True, exist_ok=True)
        target = self.config.path / f"{record.document.sha256}.{record.step_id}.json"
        atomic_write_bytes(target, json.dumps(record.to_dict()).encode("utf-8"))
        return str(target)


def _explode_holding_the_key(call: str) -> None:
    api_key = _captured_key[0] if _captured_key else "no key captured"
    headers = {"Authorization": f"Bearer {api_key}"}
    raise RuntimeError(f"probe sink: {call} exploded while sending {headers}")


def _canary_hooks_enabled() -> bool:
    return os.environ.get(CANARY_HOOKS_ENV) == "1"


@hookimpl
def register_sink_types(register: Callable[[type[Sink[Any]]], None]) -> None:
    """Register the probe sink."""
    register(ProbeSink)


@hookimpl
def startup(config: Config) -> None:
    """Capture the API key (canary runs only), as a careless plugin might."""
    if _canary_hooks_enabled():
        key = api_key_of(config)
        if key:
            _captured_key[:] = [key]


@hookimpl
def before_document_submit(
    pipeline: str, document: Document, step_id: str, metadata: dict[str, Any]
) -> dict[str, Any] | None:
    """Raise with the API key in a local variable (canary runs only)."""
    if not _canary_hooks_enabled():
        return None
    api_key = _captured_key[0] if _captured_key else "no key captured"
    token = {"bearer": api_key}
    raise KeyError(f"probe hook failed for {document.name} ({len(token)} token in scope)")
