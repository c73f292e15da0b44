"""The local function runtime (environment, async invoke rules) and the outbox, against moto server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from jobtracker_local.endpoint import fresh_moto
from jobtracker_local.functions import AsyncSettings, FunctionRuntime
from jobtracker_local.outbox import Outbox, in_process_moto
from jobtracker_local.resources import LocalResources, aws_client, provision
from jobtracker_local.template import load_template


@pytest.fixture
def stack() -> Iterator[LocalResources]:
    with fresh_moto() as server:
        yield provision(LocalResources(load_template(), server.url))


class FlakyRuntime(FunctionRuntime):
    """Every handler raises; counts the calls."""

    calls = 0

    def handler(self, function_id: str) -> Any:
        def fail(event: Any, context: Any) -> Any:
            type(self).calls += 1
            raise RuntimeError(f"broken {event['n']}")

        return fail


def test_every_function_gets_the_templates_variables_resolved_to_local_names(stack):
    env = FunctionRuntime(stack).union_environment()

    assert env["RUNS_TABLE_NAME"] == "RunsTable"
    assert env["SCHEDULE_GROUP_NAME"] == "jobtracker-local-jobs"
    assert env["JOB_RUNNER_ARN"] == "arn:aws:lambda:us-east-1:123456789012:function:JobRunnerFunction"
    assert env["SCHEDULER_DLQ_ARN"] == "arn:aws:sqs:us-east-1:123456789012:SchedulerDLQ"
    assert env["SENDER_EMAIL"] == "jobs@example.com"
    assert stack.environment("TrackerFunction")["POWERTOOLS_SERVICE_NAME"] == "tracker"


def test_a_failing_async_invoke_is_retried_then_sent_to_the_on_failure_queue(stack):
    # Given a runner that always raises, with the template's 2 async retries
    runtime = FlakyRuntime(stack, async_settings=AsyncSettings(retry_delay_seconds=0.01))
    FlakyRuntime.calls = 0

    # When it is invoked asynchronously
    runtime.invoke_async("arn:aws:lambda:us-east-1:123456789012:function:JobRunnerFunction", {"n": 7})

    # Then Lambda's invocation record lands in the runner's DLQ after 1 + 2 attempts
    sqs = aws_client("sqs", stack.endpoint)
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=stack.refs["RunnerDLQ"], WaitTimeSeconds=1).get(
            "Messages", []
        )
    runtime.stop()
    (message,) = messages
    record = json.loads(message["Body"])
    assert FlakyRuntime.calls == 3
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == {"n": 7}
    assert record["responsePayload"]["errorMessage"] == "broken 7"


def test_each_sent_email_is_written_to_the_outbox_once(stack, tmp_path):
    # Given an email sent through SESv2 from the verified sender
    sesv2 = aws_client("sesv2", stack.endpoint)
    sesv2.send_email(
        FromEmailAddress="jobs@example.com",
        Destination={"ToAddresses": ["ops@example.com"]},
        Content={"Simple": {"Subject": {"Data": "Job failed"}, "Body": {"Text": {"Data": "backup failed"}}}},
    )
    outbox = Outbox(tmp_path, in_process_moto(stack.account, stack.region))

    # When the outbox polls twice
    first, second = outbox.poll(), outbox.poll()

    # Then one .eml file holds the message
    assert second == []
    (path,) = first
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "ops@example.com"
    assert message["Subject"] == "Job failed"
    assert "backup failed" in message.get_body().get_content()
    # And a restarted outbox does not write it again
    assert Outbox(tmp_path, in_process_moto(stack.account, stack.region)).poll() == []


def test_the_in_process_mail_source_reads_only_what_was_sent_since_its_last_read(stack):
    # Given a source that has read one email
    sesv2 = aws_client("sesv2", stack.endpoint)

    def send(subject: str) -> None:
        sesv2.send_email(
            FromEmailAddress="jobs@example.com",
            Destination={"ToAddresses": ["ops@example.com"]},
            Content={"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "-"}}}},
        )

    source = in_process_moto(stack.account, stack.region)
    send("first")
    assert [m.subject for m in source()] == ["first"]

    # When another is sent
    send("second")

    # Then the next read returns that one alone, and the one after nothing
    assert [m.subject for m in source()] == ["second"]
    assert source() == []
