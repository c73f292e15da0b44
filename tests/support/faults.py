"""Faults injected into a real botocore client, for tests that prove the product survives them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import Any

from botocore.exceptions import ReadTimeoutError


class LostAnswers:
    """Lets a call reach moto (which applies it), then loses its answer: botocore sees a read
    timeout, as when a connection drops after DynamoDB wrote, and retries the same request.

    Only the first attempt of each distinct request is lost (a retry re-sends the identical
    body), so the call ends with whatever the service answers the retry. `before_loss` runs
    after the write was applied and before the caller hears anything (to interleave a rival).
    With `applied=False` the request times out before it reaches moto (nothing is written).
    """

    def __init__(
        self,
        client: Any,
        operations: Collection[str],
        *,
        limit: int | None = None,
        before_loss: Callable[[str], None] | None = None,
        applied: bool = True,
    ) -> None:
        self.client = client
        self.operations = frozenset(operations)
        self.limit = limit
        self.lost: list[str] = []
        self._before_loss = before_loss
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        # botocore calls the most specific handlers first; moto's stubber listens on the generic
        # `before-send`, so only the last handler on that same event runs after moto applied it
        # (and the first one before moto sees the request).
        if applied:
            client.meta.events.register_last("before-send", self._after_send)
        else:
            client.meta.events.register_first("before-send", self._after_send)

    def detach(self) -> None:
        self.client.meta.events.unregister("before-send", self._after_send)

    def count(self, operation: str) -> int:
        return self.lost.count(operation)

    def _after_send(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation not in self.operations:
            return
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        with self._lock:
            if (operation, body) in self._seen or (self.limit is not None and len(self.lost) >= self.limit):
                self._seen.add((operation, body))
                return
            self._seen.add((operation, body))
            self.lost.append(operation)
        if self._before_loss is not None:
            self._before_loss(operation)
        raise ReadTimeoutError(endpoint_url=request.url)
