"""S3 event notifications through SQS are hints: they nominate sooner, and a message is deleted
only once the document it announced is journaled (the engine calls `doc.ack()`)."""

from __future__ import annotations

import json
from typing import Any

from docutray_watch.sources.s3.events import keys_of_message
from tests.sources.conftest import MakeSource, pdf


def _pending(sqs: Any, queue_url: str) -> int:
    """Messages in the queue, visible or in flight (not deleted)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _notification(bucket: str, key: str) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
                }
            ]
        }
    )


async def _events_source(make_source: MakeSource, queue_url: str, **options: Any) -> Any:
    source, nominated = await make_source(
        events={"sqs_queue_url": queue_url, "wait_seconds": 0}, **options
    )
    await source.events.stop()  # the test drives `poll_once` itself, step by step
    return source, nominated


async def _drain(source: Any) -> int:
    """Read the queue until a receive brings nothing; how many messages were handled."""
    handled = 0
    while count := await source.events.poll_once():
        handled += count
    return handled


class TestEvents:
    async def test_an_event_nominates_and_its_message_waits_for_the_journal(
        self, s3: Any, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """A new object is nominated from its event; the message is deleted by `ack()`."""
        source, nominated = await _events_source(make_source, queue_url)
        await _drain(source)  # moto's s3:TestEvent is simply deleted
        assert _pending(sqs, queue_url) == 0
        s3.put_object(Bucket=bucket, Key="scan 1.pdf", Body=pdf())
        assert await _drain(source) == 1
        (doc,) = nominated.docs
        assert (doc.identity, doc.hint) == (f"s3://{bucket}/scan 1.pdf", "event")
        assert _pending(sqs, queue_url) == 1  # not journaled yet
        assert doc.ack is not None
        await doc.ack()
        assert _pending(sqs, queue_url) == 0
        assert await source.discover() == 0  # the listing knows it was offered

    async def test_a_duplicate_event_nominates_once_and_both_messages_go_with_the_ack(
        self, s3: Any, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """The same notification twice: one nomination; the ack deletes both messages."""
        source, nominated = await _events_source(make_source, queue_url)
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        sqs.send_message(QueueUrl=queue_url, MessageBody=_notification(bucket, "a.pdf"))
        await _drain(source)
        assert len(nominated.docs) == 1
        assert _pending(sqs, queue_url) == 2
        assert nominated.docs[0].ack is not None
        await nominated.docs[0].ack()
        assert _pending(sqs, queue_url) == 0

    async def test_an_event_for_an_object_already_journaled_is_deleted_at_once(
        self, s3: Any, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """Listed, journaled, then its (late) event arrives: deleted, nothing nominated."""
        source, nominated = await _events_source(make_source, queue_url)
        await _drain(source)
        sqs.purge_queue(QueueUrl=queue_url)
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        await source.discover()
        (doc,) = nominated.docs
        assert doc.ack is not None
        await doc.ack()  # the engine journaled it
        sqs.send_message(QueueUrl=queue_url, MessageBody=_notification(bucket, "a.pdf"))
        assert await _drain(source) == 2  # moto's own notification of the put, and ours
        assert len(nominated.docs) == 1
        assert _pending(sqs, queue_url) == 0

    async def test_an_event_for_an_object_taken_but_not_journaled_waits_for_its_ack(
        self, s3: Any, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """Listed and not journaled yet: the event's message is deleted with the ack."""
        source, nominated = await _events_source(make_source, queue_url)
        await _drain(source)
        sqs.purge_queue(QueueUrl=queue_url)
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        await source.discover()
        await _drain(source)
        assert len(nominated.docs) == 1
        assert _pending(sqs, queue_url) == 1
        assert nominated.docs[0].ack is not None
        await nominated.docs[0].ack()
        assert _pending(sqs, queue_url) == 0

    async def test_an_event_for_a_deleted_object_is_deleted(
        self, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """Nothing to look at: the message goes, nothing is nominated."""
        source, nominated = await _events_source(make_source, queue_url)
        sqs.send_message(QueueUrl=queue_url, MessageBody=_notification(bucket, "gone.pdf"))
        await _drain(source)
        assert nominated.docs == []
        assert _pending(sqs, queue_url) == 0

    async def test_the_marker_event_nominates_its_document(
        self, s3: Any, sqs: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """With ready_marker, the document's own event waits; the marker's event takes it."""
        source, nominated = await _events_source(make_source, queue_url, ready_marker=".done")
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        await _drain(source)
        assert nominated.docs == []
        s3.put_object(Bucket=bucket, Key="a.pdf.done", Body=b"")
        await _drain(source)
        assert nominated.identities == [f"s3://{bucket}/a.pdf"]

    async def test_versions_gone_from_the_bucket_are_forgotten(
        self, s3: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """What the reader remembers stays bounded: a deleted object leaves it at the next
        listing."""
        source, nominated = await _events_source(make_source, queue_url)
        s3.put_object(Bucket=bucket, Key="a.pdf", Body=pdf())
        await source.discover()
        assert nominated.docs[0].ack is not None
        await nominated.docs[0].ack()
        assert source.events.describe()["journaled"] == 1
        await source.delete(nominated.docs[0])
        await source.discover()
        assert source.events.describe()["journaled"] == 0

    async def test_check_reads_the_queue(
        self, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """`validate` gets a line for the queue too."""
        source, _ = await _events_source(make_source, queue_url)
        assert (await source.check())[-1] == f"queue {queue_url}: readable"

    async def test_the_reader_runs_on_its_own_after_start(
        self, s3: Any, bucket: str, queue_url: str, make_source: MakeSource
    ) -> None:
        """Started, the source reads the queue by itself and nominates from it."""
        import asyncio

        source, nominated = await make_source(
            events={"sqs_queue_url": queue_url, "wait_seconds": 1}
        )
        arrived = asyncio.Event()
        record = nominated.__call__

        def nominate(doc: Any) -> bool:
            arrived.set()
            return record(doc)

        source._nominate = nominate
        s3.put_object(Bucket=bucket, Key="live.pdf", Body=pdf())
        await asyncio.wait_for(arrived.wait(), timeout=20)
        assert nominated.identities == [f"s3://{bucket}/live.pdf"]


class TestMessageParsing:
    def test_keys_are_url_decoded_and_other_buckets_ignored(self) -> None:
        """S3 encodes keys (`+` for a space); records of another bucket are not ours."""
        body = json.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b1"}, "object": {"key": "a+b%C3%A9.pdf"}},
                    },
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "other"}, "object": {"key": "x.pdf"}},
                    },
                    {
                        "eventName": "ObjectRemoved:Delete",
                        "s3": {"bucket": {"name": "b1"}, "object": {"key": "y.pdf"}},
                    },
                ]
            }
        )
        assert keys_of_message(body, "b1") == ["a bé.pdf"]

    def test_a_notification_through_sns_is_unwrapped(self) -> None:
        """An SNS envelope (`Message` + `TopicArn`) holds the notification as a string."""
        envelope = json.dumps({"TopicArn": "arn:t", "Message": _notification("b1", "k.pdf")})
        assert keys_of_message(envelope, "b1") == ["k.pdf"]

    def test_a_test_event_or_junk_is_not_a_notification(self) -> None:
        """None: such a message is just deleted."""
        assert keys_of_message('{"Event": "s3:TestEvent"}', "b1") is None
        assert keys_of_message("not json", "b1") is None
