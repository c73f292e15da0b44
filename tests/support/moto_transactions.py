"""moto's TransactWriteItems without its whole-table deepcopy, for in-process `mock_aws` tests.

The implementation is the local stack's (`jobtracker_local.moto_transactions`); tests patch
it in for their own duration only.
"""

from __future__ import annotations

import pytest
from jobtracker_local.moto_transactions import transact_write_items
from moto.dynamodb.models import DynamoDBBackend


def fast_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
