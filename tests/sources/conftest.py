"""Fixtures for the source tests: moto's S3 + SQS server on a loopback port, a fresh bucket and
queue per test, and an s3 source aimed at them that records what it nominates.

Credentials reach boto3 through its ordinary chain (environment variables), as in production.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docutray_watch.sources.base import SourceDocument
from docutray_watch.sources.s3 import S3Source, S3SourceConfig
from tests.s3kit import (
    REGION,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    MotoServer,
    client,
    hide_aws_setup,
    new_bucket,
    running_moto,
)


@pytest.fixture(name="moto", scope="session")
def moto_fixture() -> Iterator[MotoServer]:
    """One moto server (S3 and SQS) for the session."""
    yield from running_moto()


@pytest.fixture(name="aws_env")
def aws_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Test credentials in the environment (the boto3 chain), nothing from the machine."""
    env = {
        **hide_aws_setup(monkeypatch, tmp_path),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(name="s3")
def s3_fixture(moto: MotoServer, aws_env: dict[str, str]) -> Any:
    """A plain boto3 S3 client, to arrange and inspect the bucket."""
    return client("s3", moto)


@pytest.fixture(name="sqs")
def sqs_fixture(moto: MotoServer, aws_env: dict[str, str]) -> Any:
    """A plain boto3 SQS client."""
    return client("sqs", moto)


@pytest.fixture(name="bucket")
def bucket_fixture(s3: Any) -> Iterator[str]:
    """A fresh bucket, emptied and removed afterwards."""
    with new_bucket(s3, "src") as name:
        yield name


@pytest.fixture(name="archive_bucket")
def archive_bucket_fixture(s3: Any) -> Iterator[str]:
    """A second bucket that moves go to."""
    with new_bucket(s3, "arc") as name:
        yield name


@pytest.fixture(name="queue_url")
def queue_url_fixture(s3: Any, sqs: Any, bucket: str) -> Iterator[str]:
    """A queue that receives the bucket's ObjectCreated notifications (moto sends them)."""
    url: str = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    yield url
    sqs.delete_queue(QueueUrl=url)


class Nominations:
    """The engine's side of `nominate`: records documents, takes them up unless told not to."""

    def __init__(self) -> None:
        self.docs: list[SourceDocument] = []
        self.take = True

    def __call__(self, doc: SourceDocument) -> bool:
        self.docs.append(doc)
        return self.take

    @property
    def identities(self) -> list[str]:
        """What was nominated, in order."""
        return [doc.identity for doc in self.docs]


def s3_source(moto: MotoServer, bucket: str, /, **options: Any) -> dict[str, Any]:
    """An s3 source block on `bucket` at `moto` (`options` may name another bucket), failing at
    the first error (no retries)."""
    return {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": moto.endpoint_url,
        "region": REGION,
        "max_attempts": 1,
        **options,
    }


MakeSource = Callable[..., Awaitable[tuple[S3Source, Nominations]]]


@pytest.fixture(name="make_source")
async def make_source_fixture(moto: MotoServer, bucket: str) -> AsyncIterator[MakeSource]:
    """Build and start an s3 source on the test bucket; stopped afterwards."""
    started: list[S3Source] = []

    async def make(**options: Any) -> tuple[S3Source, Nominations]:
        block = s3_source(moto, bucket, **options)
        source = S3Source(S3SourceConfig.model_validate(block), pipeline="scans")
        nominations = Nominations()
        await source.start(nominations)
        started.append(source)
        return source, nominations

    yield make
    for source in started:
        await source.stop()


PDF = b"%PDF-1.7\n" + b"x" * 100 + b"\n%%EOF\n"


def pdf(tag: str = "") -> bytes:
    """A small PDF-looking body, different for each tag."""
    return PDF + tag.encode()
