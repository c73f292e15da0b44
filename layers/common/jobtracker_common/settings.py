"""Typed settings read from the environment, validated once per process.

Resource names have no defaults: a missing table name is a deploy error, reported as such,
never silently replaced by "jobs".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from jobtracker_common.errors import ConfigurationError


class BaseSettings(BaseModel):
    """Subclass per function; each field's alias is the environment variable that feeds it."""

    # A process validates exactly one settings class, once (`load_settings`): the validator of
    # that class is built then, and those of its bases and of its siblings in the same module
    # (every function's settings module defines a few) are never built.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    service_name: str = Field(default="jobtracker", alias="POWERTOOLS_SERVICE_NAME")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = dict(os.environ if environ is None else environ)
        try:
            return cls.model_validate(env)
        except PydanticValidationError as exc:
            problems = []
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"])
                problems.append(f"{name}: {err['msg']}")
            raise ConfigurationError(
                f"{cls.__name__} is invalid: " + "; ".join(problems),
                details=[{"field": p} for p in problems],
            ) from exc


# One small class per resource, so a function's settings name exactly what it uses and the template
# grants nothing more (tests/infra/test_least_privilege.py ties both together).
class JobsTableSettings(BaseSettings):
    jobs_table_name: str = Field(alias="JOBS_TABLE_NAME", min_length=3)


#: Most shards the active index can have (the ActiveIndexShards parameter's MaxValue; the sweeper
#: reads all of them, since a run keeps its shard until it ends); tests/infra ties them together.
MAX_ACTIVE_SHARDS = 64


class RunsTableSettings(BaseSettings):
    runs_table_name: str = Field(alias="RUNS_TABLE_NAME", min_length=3)
    #: Shards of the sparse active-runs index key; a constant key would be one hot partition.
    active_index_shards: int = Field(default=8, alias="ACTIVE_INDEX_SHARDS", ge=1, le=MAX_ACTIVE_SHARDS)


class RunsSettings(JobsTableSettings, RunsTableSettings):
    """The jobs and the runs table (job runner, API)."""


S = TypeVar("S", bound=BaseSettings)


@cache
def load_settings(cls: type[S]) -> S:
    """The settings of this process; cached, so every caller sees the same validated object."""
    return cls.from_env()
