"""RunsRepository's conditional writes against a fake client: whose write a failed condition met."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from jobtracker_common.errors import DuplicateError, TransientError
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories import RunsRepository
from jobtracker_common.repositories.runs import WRITE_ID

from tests.support.runs import sample_run


class RefusingClient:
    """Refuses every transactional create with the cancellation reasons it is given; the
    reasons may echo the attempted items back as the items found (a lost first answer)."""

    def __init__(self, codes: list[str], *, echo: bool = False) -> None:
        self.codes = codes
        self.echo = echo
        self.calls = 0

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> None:
        self.calls += 1
        reasons: list[dict[str, Any]] = []
        for code, op in zip(self.codes, TransactItems, strict=True):
            reason: dict[str, Any] = {"Code": code}
            if code == "ConditionalCheckFailed":
                found = dict(op["Put"]["Item"])
                if not self.echo:
                    found[WRITE_ID] = {"S": "somebody-else"}
                reason["Item"] = found
            reasons.append(reason)
        response: Any = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
        raise ClientError(response, "TransactWriteItems")

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {"Item": {"run_id": {"S": "01JFIRSTRUN000000000000000"}}}


def test_a_transaction_conflict_is_transient_not_a_duplicate() -> None:
    # Given a concurrent transaction on the same items (no condition failed, nothing written)
    runs = RunsRepository(RefusingClient(["TransactionConflict", "None"]), "RunsTable")  # type: ignore[arg-type]
    # When the manual run is created
    # Then the caller is told to retry, not that a run it cannot find already exists
    with pytest.raises(TransientError):
        runs.create(sample_run(), dedupe_key="manual|j|k")


def test_a_marker_written_by_someone_else_is_a_duplicate_of_their_run() -> None:
    runs = RunsRepository(RefusingClient(["ConditionalCheckFailed", "None"]), "RunsTable")  # type: ignore[arg-type]
    with pytest.raises(DuplicateError) as raised:
        runs.create(sample_run(), dedupe_key="manual|j|k")
    assert raised.value.existing_id == "01JFIRSTRUN000000000000000"


def test_a_transaction_that_met_its_own_items_is_a_success() -> None:
    # Given a retry whose first attempt wrote both items (only its answer was lost)
    client = RefusingClient(["ConditionalCheckFailed", "ConditionalCheckFailed"], echo=True)
    runs = RunsRepository(client, "RunsTable")  # type: ignore[arg-type]
    # When the manual run is created, then it is reported created
    assert runs.create(sample_run(), dedupe_key="manual|j|k") == sample_run()
    assert client.calls == 1


class AppliedThenThrottledClient:
    """The first attempt of a put was applied but its answer lost; botocore's retries were then
    throttled until it gave up: the error it raises is the last attempt's (a 400)."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None

    def put_item(self, **kwargs: Any) -> None:
        self.stored = kwargs["Item"]
        response: Any = {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 7},
        }
        raise ClientError(response, "PutItem")

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {"Item": self.stored} if self.stored is not None else {}


def test_a_write_applied_by_an_earlier_attempt_is_ours_whatever_the_last_attempt_said() -> None:
    # Given a create whose first attempt was applied and whose retries were all throttled
    client = AppliedThenThrottledClient()
    runs = RunsRepository(client, "RunsTable")  # type: ignore[arg-type]
    # When the run is created, then it is reported created (not an error the runner gives up on)
    assert runs.create(sample_run()) == sample_run()


class AppliedThenUnreachableClient(AppliedThenThrottledClient):
    """The first attempt was applied (answer timed out); the retries could not even connect."""

    def put_item(self, **kwargs: Any) -> None:
        self.stored = kwargs["Item"]
        raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")


def test_a_write_applied_before_the_endpoint_became_unreachable_is_ours() -> None:
    runs = RunsRepository(AppliedThenUnreachableClient(), "RunsTable")  # type: ignore[arg-type]
    assert runs.create(sample_run()) == sample_run()


def test_a_write_that_never_connected_and_is_not_stored_reports_the_error() -> None:
    class Unreachable(AppliedThenUnreachableClient):
        def put_item(self, **kwargs: Any) -> None:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    with pytest.raises(EndpointConnectionError):
        RunsRepository(Unreachable(), "RunsTable").create(sample_run())  # type: ignore[arg-type]


class DeleteAnswerLostClient:
    """A run with two log chunks whose delete is applied but whose every answer times out."""

    def __init__(self) -> None:
        self.run_exists = True
        self.deleted: list[dict[str, Any]] = []

    def delete_item(self, **_: Any) -> None:
        self.run_exists = False
        raise ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        return {"Item": kwargs["Key"]} if self.run_exists else {}

    def query(self, **_: Any) -> dict[str, Any]:
        pk = {"S": "RUN#01JRUN0000000000000000000A"}
        return {"Items": [{"pk": pk, "sk": {"S": f"LOG#001#{n:06d}"}} for n in (0, 50)]}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        self.deleted += [r["DeleteRequest"]["Key"] for r in RequestItems["RunsTable"]]
        return {}


def test_a_run_delete_applied_before_botocore_gave_up_still_removes_its_log_entries() -> None:
    # Given a finished run whose delete lands but is never answered
    client = DeleteAnswerLostClient()
    run = sample_run().model_copy(update={"status": RunStatus.COMPLETED})
    # When it is deleted
    RunsRepository(client, "RunsTable").delete(run)  # type: ignore[arg-type]
    # Then the run's absence shows the delete applied, and its log chunks are deleted too
    assert [k["sk"]["S"] for k in client.deleted] == ["LOG#001#000000", "LOG#001#000050"]


def test_a_run_delete_that_never_arrived_reports_the_error() -> None:
    class NeverArrives(DeleteAnswerLostClient):
        def delete_item(self, **_: Any) -> None:
            raise ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    client = NeverArrives()
    finished = sample_run().model_copy(update={"status": RunStatus.FAILED})
    with pytest.raises(ReadTimeoutError):
        RunsRepository(client, "RunsTable").delete(finished)  # type: ignore[arg-type]
    assert client.deleted == []
