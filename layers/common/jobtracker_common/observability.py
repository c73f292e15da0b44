"""Powertools Logger/Metrics set-up shared by every function; the Tracer is loaded lazily.

The X-Ray SDK costs ~250 ms of import time, so `tracer()` builds the Tracer only when
tracing is switched on (POWERTOOLS_TRACE_DISABLED unset/false) and only on first use.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "JobTracker")


@cache
def logger(service: str) -> Logger:
    return Logger(service=service)


@cache
def metrics(service: str) -> Metrics:
    return Metrics(namespace=NAMESPACE, service=service)


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() not in {"1", "true", "yes"}


@cache
def tracer(service: str) -> Tracer | None:
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=service)
