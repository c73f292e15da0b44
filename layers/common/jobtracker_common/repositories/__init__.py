"""One repository per table. Each takes an injected low-level DynamoDB client."""

from jobtracker_common.repositories.jobs import JobsRepository
from jobtracker_common.repositories.runs import RunsRepository

__all__ = ["JobsRepository", "RunsRepository"]
