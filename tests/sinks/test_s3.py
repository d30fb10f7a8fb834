"""Tests for `docutray_watch.sinks.s3` against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from docutray_watch._testkit import make_record
from docutray_watch.config import ConfigError, parse_config
from docutray_watch.plugins import get_plugin_manager
from docutray_watch.sinks.base import PermanentSinkError, SinkError
from docutray_watch.sinks.s3 import (
    BOTO3_MISSING,
    DEFAULT_KEY,
    DEFAULT_PREFIX,
    MAX_KEY_BYTES,
    S3Config,
    S3Sink,
    object_key,
)

SAFE_KEY = re.compile(r"^[A-Za-z0-9!_.*'()/-]+$")
HOSTILE_NAMES = {
    "dot-dot": "../../etc/passwd",
    "control": "in\x00vo\x1bice\x7f.pdf",
    "rtl-override": "invoice\u202efdp.exe",
    "long": "ü" * 150 + ".pdf",  # 300 bytes of UTF-8 before the suffix
    "nfd": unicodedata.normalize("NFD", "façade-été.pdf"),
    "fullwidth-dots": "\uff0e\uff0e\uff0fsecret.pdf",
    "leading-dash": "-rf .pdf",
    "punctuation": "bill #3 & co; 50% €?.pdf",
    "cjk": "請求書.pdf",
}

MakeSink = Callable[..., S3Sink]
Options = Callable[..., dict[str, Any]]


@pytest.fixture(name="make_sink")
def make_sink_fixture(s3_options: Options, aws_isolation: None) -> Iterator[MakeSink]:
    """Build opened s3 sinks aimed at the moto server; all are closed afterwards."""
    sinks: list[S3Sink] = []

    def make(bucket: str, **overrides: Any) -> S3Sink:
        options = s3_options(bucket, **overrides)
        sink = S3Sink(S3Config.model_validate(options), pipeline="invoices", sink_id="s3")
        sink.open()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def _objects(s3_client: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _pipeline_config(tmp_path: Path, sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp_path / "inbox")},
                "steps": ["stp_invoice"],
                "sinks": [sink],
            }
        ],
    }


def _config_error(tmp_path: Path, sink: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            _pipeline_config(tmp_path, sink),
            environ={},
        )
    return str(caught.value)


class TestS3Config:
    """Validation of the s3 sink block."""

    def test_defaults(self) -> None:
        """Only `bucket` is required; prefix and key default to dated, hash-bearing names."""
        config = S3Config.model_validate({"type": "s3", "bucket": "results"})
        assert (config.prefix, config.key) == (DEFAULT_PREFIX, DEFAULT_KEY)
        assert config.aws_secret_access_key is None

    def test_missing_bucket_names_yaml_path(self, tmp_path: Path) -> None:
        """A block without `bucket` is reported at pipelines[0].sinks[0].bucket."""
        message = _config_error(tmp_path, {"type": "s3"})
        assert "pipelines[0].sinks[0].bucket: Field required" in message

    def test_unknown_placeholder_rejected(self, tmp_path: Path) -> None:
        """A prefix with an unknown placeholder is reported at its path when loading."""
        message = _config_error(tmp_path, {"type": "s3", "bucket": "b-1", "prefix": "{nope}/"})
        assert "pipelines[0].sinks[0].prefix" in message
        assert "unknown placeholder {nope}" in message

    def test_key_must_identify_the_result(self) -> None:
        """prefix + key without a hash and the step ID is rejected (results would collide)."""
        with pytest.raises(ValidationError, match="must contain"):
            S3Config.model_validate({"type": "s3", "bucket": "b-1", "key": "{stem}.json"})

    def test_secret_needs_key_id(self) -> None:
        """A secret access key without its key ID is rejected."""
        with pytest.raises(ValidationError, match="together"):
            S3Config.model_validate({"type": "s3", "bucket": "b-1", "aws_secret_access_key": "x"})

    def test_kms_key_needs_kms(self) -> None:
        """sse_kms_key_id is only accepted with server_side_encryption: aws:kms."""
        with pytest.raises(ValidationError, match="aws:kms"):
            S3Config.model_validate({"type": "s3", "bucket": "b-1", "sse_kms_key_id": "k"})

    def test_secret_hidden_in_repr(self, s3_options: Options) -> None:
        """The secret access key never shows in the config's or the sink's repr."""
        options = s3_options("b-1")
        config = S3Config.model_validate(options)
        sink = S3Sink(config, pipeline="invoices", sink_id="s3")
        assert options["aws_secret_access_key"] not in repr(config) + repr(sink)

    def test_missing_boto3_is_a_config_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without boto3, loading an s3 block says which extra to install, at the sink's path."""
        monkeypatch.setitem(sys.modules, "boto3", None)
        message = _config_error(tmp_path, {"type": "s3", "bucket": "b-1"})
        assert f"pipelines[0].sinks[0]: {BOTO3_MISSING}" in message

    def test_module_imports_without_boto3(self) -> None:
        """`docutray_watch.sinks.s3` imports when boto3 and botocore are absent."""
        code = (
            "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
            "import docutray_watch.sinks.s3"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class TestObjectKey:
    """Rendering of object keys."""

    @pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
    def test_hostile_names_give_safe_keys(self, name: str) -> None:
        """Any document name gives a key of safe characters, under the prefix, with no dot-parts."""
        key = object_key(DEFAULT_PREFIX, DEFAULT_KEY, make_record(name=name))
        assert SAFE_KEY.match(key)
        assert len(key.encode()) <= MAX_KEY_BYTES
        parts = key.split("/")
        assert parts[:4] == ["invoices", "2026", "01", "15"]
        assert all(
            part not in ("", ".", "..") and not part.startswith(("-", ".")) for part in parts
        )
        assert len(parts) == 5

    def test_deterministic(self) -> None:
        """The same record always gives the same key (redelivery overwrites)."""
        record = make_record(name=HOSTILE_NAMES["long"])
        assert object_key(DEFAULT_PREFIX, DEFAULT_KEY, record) == object_key(
            DEFAULT_PREFIX, DEFAULT_KEY, record.model_copy()
        )

    def test_nfd_and_nfc_names_agree(self) -> None:
        """A name in decomposed (NFD) form gives the same key as its composed form."""
        nfc = make_record(name=unicodedata.normalize("NFC", "façade.pdf"))
        nfd = make_record(name=unicodedata.normalize("NFD", "façade.pdf"))
        assert object_key(DEFAULT_PREFIX, DEFAULT_KEY, nfd) == object_key(
            DEFAULT_PREFIX, DEFAULT_KEY, nfc
        )
        assert object_key(DEFAULT_PREFIX, DEFAULT_KEY, nfc).endswith(
            "/facade.d0975b81b2e7.stp_test.json"
        )

    def test_long_names_keep_keys_unique(self) -> None:
        """Two documents whose long names share a beginning keep different keys."""
        first = make_record(name="x" * 300 + "-a.pdf", content=b"a")
        second = make_record(name="x" * 300 + "-b.pdf", content=b"b")
        keys = {object_key(DEFAULT_PREFIX, DEFAULT_KEY, r) for r in (first, second)}
        assert len(keys) == 2
        assert all(len(part) <= 255 for key in keys for part in key.split("/"))
        assert all(key.endswith(".json") for key in keys)

    def test_key_over_1024_bytes_is_shortened_uniquely(self) -> None:
        """A template rendering past 1,024 bytes is cut to fit and stays unique per document."""
        template = "{stem}/{stem}/{stem}/{stem}/{stem}.{short_sha}.{step_id}.json"
        records = [make_record(name="y" * 250 + f"{i}.pdf", content=bytes([i])) for i in range(2)]
        keys = [object_key("", template, r) for r in records]
        assert all(len(key.encode()) <= MAX_KEY_BYTES for key in keys)
        assert keys[0] != keys[1]
        assert all(SAFE_KEY.match(key) and key.count("/") == 4 for key in keys)

    def test_too_many_parts_is_permanent(self) -> None:
        """A template that cannot fit in 1,024 bytes at all fails for good, not with retries."""
        with pytest.raises(PermanentSinkError, match="cannot fit"):
            object_key("/".join(["{stem}"] * 600) + "/", DEFAULT_KEY, make_record())


class TestS3SinkDeliver:
    """Uploading result records."""

    def test_upload(self, make_sink: MakeSink, bucket: str, s3_client: Any) -> None:
        """The object holds the record JSON, typed application/json, with metadata."""
        record = make_record(name="año 2026%.pdf", data={"total": 12.5})
        receipt = make_sink(bucket).deliver(record)
        key = object_key(DEFAULT_PREFIX, DEFAULT_KEY, record)
        assert receipt == f"s3://{bucket}/{key}"
        stored = s3_client.get_object(Bucket=bucket, Key=key)
        body = stored["Body"].read()
        assert body == record.to_json().encode()
        assert json.loads(body) == record.to_dict()
        assert stored["ContentType"] == "application/json"
        metadata = stored["Metadata"]
        assert {k: unquote(v) for k, v in metadata.items()} == {
            "pipeline": "invoices",
            "step-id": "stp_test",
            "execution-id": "exec_test",
            "sha256": record.document.sha256,
            "source-name": "año 2026%.pdf",
            "status": "SUCCESS",
        }
        assert all(value.isascii() for value in metadata.values())

    @pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
    def test_hostile_names_upload(
        self, make_sink: MakeSink, bucket: str, s3_client: Any, name: str
    ) -> None:
        """A hostile document name is stored as exactly one object at its sanitised key."""
        record = make_record(name=name)
        make_sink(bucket).deliver(record)
        assert _objects(s3_client, bucket) == [object_key(DEFAULT_PREFIX, DEFAULT_KEY, record)]

    def test_redelivery_overwrites(self, make_sink: MakeSink, bucket: str, s3_client: Any) -> None:
        """Delivering the same (pipeline, sha256, step) twice leaves one object, the latest."""
        sink = make_sink(bucket)
        sink.deliver(make_record(execution_id="exec_1"))
        sink.deliver(make_record(execution_id="exec_2"))
        keys = _objects(s3_client, bucket)
        assert len(keys) == 1
        body = json.loads(s3_client.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
        assert body["execution_id"] == "exec_2"

    def test_each_step_has_its_object(
        self, make_sink: MakeSink, bucket: str, s3_client: Any
    ) -> None:
        """Two steps on one document give two objects."""
        sink = make_sink(bucket)
        sink.deliver(make_record(step_id="stp_a"))
        sink.deliver(make_record(step_id="stp_b"))
        assert len(_objects(s3_client, bucket)) == 2

    def test_encryption_and_storage_class(
        self, make_sink: MakeSink, bucket: str, s3_client: Any
    ) -> None:
        """server_side_encryption, sse_kms_key_id and storage_class reach S3."""
        kms_key = "arn:aws:kms:us-east-1:123456789012:key/test"
        sink = make_sink(
            bucket,
            server_side_encryption="aws:kms",
            sse_kms_key_id=kms_key,
            storage_class="STANDARD_IA",
        )
        record = make_record()
        sink.deliver(record)
        head = s3_client.head_object(Bucket=bucket, Key=sink.key_for(record))
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == kms_key
        assert head["StorageClass"] == "STANDARD_IA"

    def test_aes256(self, make_sink: MakeSink, bucket: str, s3_client: Any) -> None:
        """server_side_encryption: AES256 reaches S3."""
        sink = make_sink(bucket, server_side_encryption="AES256")
        record = make_record()
        sink.deliver(record)
        head = s3_client.head_object(Bucket=bucket, Key=sink.key_for(record))
        assert head["ServerSideEncryption"] == "AES256"

    def test_path_addressing(self, make_sink: MakeSink, bucket: str, s3_client: Any) -> None:
        """addressing_style: path works against an S3-compatible endpoint."""
        make_sink(bucket, addressing_style="path").deliver(make_record())
        assert len(_objects(s3_client, bucket)) == 1

    @pytest.mark.parametrize(
        ("checksums", "expect_header"),
        [(None, True), ("when_supported", True), ("when_required", False)],
    )
    def test_checksums_option_decides_the_crc32_header(
        self,
        make_sink: MakeSink,
        bucket: str,
        s3_client: Any,
        checksums: str | None,
        expect_header: bool,
    ) -> None:
        """checksums: when_required uploads without boto3's CRC32 header; the default sends it."""
        options = {} if checksums is None else {"checksums": checksums}
        sink = make_sink(bucket, **options)
        sink.open()
        sent: list[dict[str, str]] = []
        client = sink._client
        assert client is not None
        client.meta.events.register(
            "before-send.s3.PutObject",
            lambda request, **_: sent.append({k.lower(): v for k, v in request.headers.items()}),
        )
        sink.deliver(make_record())
        assert len(sent) == 1
        assert ("x-amz-checksum-crc32" in sent[0]) is expect_header
        assert len(_objects(s3_client, bucket)) == 1


class TestS3SinkFailures:
    """Health checks and failed deliveries."""

    def test_check_passes(self, make_sink: MakeSink, bucket: str) -> None:
        """check() succeeds on an existing bucket."""
        make_sink(bucket).check()

    def test_missing_bucket(self, make_sink: MakeSink) -> None:
        """A missing bucket is a retried SinkError naming the bucket, from check() and deliver()."""
        sink = make_sink("no-such-bucket-docutray")
        with pytest.raises(SinkError, match=r"'no-such-bucket-docutray'.*does not exist") as check:
            sink.check()
        with pytest.raises(SinkError, match="does not exist") as delivery:
            sink.deliver(make_record())
        assert not isinstance(check.value, PermanentSinkError)
        assert not isinstance(delivery.value, PermanentSinkError)

    def test_bad_credentials(
        self, make_sink: MakeSink, bucket: str, moto_server: Any, s3_options: Options
    ) -> None:
        """Rejected credentials are a retried SinkError that never shows the secret."""
        reset = f"{moto_server.endpoint_url}/moto-api/reset-auth"
        # moto checks signatures against its IAM users once auth is on: ours is unknown.
        previous = httpx.post(reset, content=b"0").json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
        try:
            sink = make_sink(bucket)
            with pytest.raises(SinkError, match="credentials were rejected") as delivery:
                sink.deliver(make_record())
            with pytest.raises(SinkError, match="access denied") as check:
                sink.check()
        finally:
            httpx.post(reset, content=previous.encode())
        for error in (delivery.value, check.value):
            assert not isinstance(error, PermanentSinkError)
            assert s3_options(bucket)["aws_secret_access_key"] not in str(error)

    def test_endpoint_down_then_back(
        self, bucket: str, s3_client: Any, make_sink: MakeSink, own_moto_server: Any
    ) -> None:
        """With the endpoint down delivery fails (retried); once it is back it succeeds."""
        sink = make_sink(bucket, endpoint_url=own_moto_server.endpoint_url)
        own_moto_server.stop()
        with pytest.raises(SinkError, match="unreachable") as down:
            sink.deliver(make_record())
        assert not isinstance(down.value, PermanentSinkError)
        with pytest.raises(SinkError, match="unreachable"):
            sink.check()
        assert _objects(s3_client, bucket) == []
        own_moto_server.start()  # on the same port: the sink's endpoint is back
        sink.deliver(make_record())
        assert len(_objects(s3_client, bucket)) == 1

    def test_open_without_boto3(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """open() without boto3 raises a SinkError naming the extra."""
        config = S3Config.model_validate({"type": "s3", "bucket": "b-1"})
        monkeypatch.setitem(sys.modules, "boto3", None)
        with pytest.raises(SinkError, match=re.escape(BOTO3_MISSING)):
            S3Sink(config, pipeline="invoices", sink_id="s3").open()


class TestS3SinkRegistration:
    """The sink registers like a plugin."""

    def test_registered(self) -> None:
        """The built-in plugins provide the `s3` sink type."""
        from docutray_watch.plugins import collect_sink_types

        types = collect_sink_types(get_plugin_manager(load_entrypoints=False))
        assert types["s3"].sink_class is S3Sink
        assert types["s3"].plugin == "docutray_watch.sinks.s3"
