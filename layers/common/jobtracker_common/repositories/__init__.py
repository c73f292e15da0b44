"""One repository per table. Each takes an injected low-level DynamoDB client.

The re-exports are resolved on first access (PEP 562), so importing one repository does not
import the others (the sweeper needs the runs repository, not the jobs one): cold start pays
for every module a function imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtracker_common.repositories.jobs import JobsRepository
    from jobtracker_common.repositories.runs import RunsRepository

__all__ = ["JobsRepository", "RunsRepository"]


def __getattr__(name: str) -> Any:
    # Plain import statements (not importlib), so `python -X importtime` still lists them.
    if name == "JobsRepository":
        from jobtracker_common.repositories.jobs import JobsRepository

        return JobsRepository
    if name == "RunsRepository":
        from jobtracker_common.repositories.runs import RunsRepository

        return RunsRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
