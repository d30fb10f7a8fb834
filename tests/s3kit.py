"""What the S3 tests of sinks and sources share: moto's server on a loopback port, the test
credentials, boto3 kept away from the machine's AWS setup, and buckets made and removed.

The fixtures that use these stay in each folder's conftest.py, with the scope they have there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

S3_ACCESS_KEY = "AKIATESTDOCUTRAY"
S3_SECRET_KEY = "test-secret-never-shown"
REGION = "us-east-1"


class MotoServer:
    """moto's S3 server in this process, restartable on the port it first bound."""

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        """Where boto3 reaches the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again) on the remembered port, or on a free one the first time."""
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        """Stop answering; the port is closed (moto keeps its buckets in this process)."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def running_moto() -> Iterator[MotoServer]:
    """A started moto server, stopped when the generator is closed: a fixture's body."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


def hide_aws_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Hide the machine's AWS configuration and credentials from boto3; the variables set."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env = {
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def client(
    service: Literal["s3", "sqs"],
    moto: MotoServer,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Any:
    """A plain boto3 client of `moto`; credentials from the environment unless given."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=moto.endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


@contextmanager
def new_bucket(s3: Any, prefix: str) -> Iterator[str]:
    """A fresh bucket `<prefix>-<random>`, emptied and removed afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)
