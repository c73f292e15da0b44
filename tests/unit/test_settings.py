"""Settings: validated environment, no default resource names."""

from __future__ import annotations

import pytest
from jobtracker_common.errors import ConfigurationError
from jobtracker_common.settings import RunsSettings


def test_missing_table_names_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as err:
        RunsSettings.from_env({})
    assert "JOBS_TABLE_NAME" in err.value.message and "RUNS_TABLE_NAME" in err.value.message


def test_settings_read_their_aliases() -> None:
    settings = RunsSettings.from_env(
        {"JOBS_TABLE_NAME": "jobs-prod", "RUNS_TABLE_NAME": "runs-prod", "ACTIVE_INDEX_SHARDS": "4"}
    )
    assert (settings.jobs_table_name, settings.runs_table_name, settings.active_index_shards) == (
        "jobs-prod",
        "runs-prod",
        4,
    )


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="ACTIVE_INDEX_SHARDS"):
        RunsSettings.from_env(
            {"JOBS_TABLE_NAME": "jobs", "RUNS_TABLE_NAME": "runs", "ACTIVE_INDEX_SHARDS": "0"}
        )


def test_a_settings_class_is_built_when_first_validated_and_its_bases_never() -> None:
    from jobtracker_common.settings import BaseSettings, RunsTableSettings
    from pydantic import Field

    class OneFunctionSettings(RunsTableSettings):
        queue_url: str = Field(alias="QUEUE_URL", min_length=1)

    assert not OneFunctionSettings.__pydantic_complete__
    settings = OneFunctionSettings.from_env({"RUNS_TABLE_NAME": "runs", "QUEUE_URL": "q"})
    assert (settings.runs_table_name, settings.queue_url, settings.active_index_shards) == ("runs", "q", 8)
    assert OneFunctionSettings.__pydantic_complete__
    # Deferred is not weaker: the inherited constraints and the subclass's own still apply.
    with pytest.raises(ConfigurationError, match="QUEUE_URL"):
        OneFunctionSettings.from_env({"RUNS_TABLE_NAME": "runs", "QUEUE_URL": ""})
    assert not BaseSettings.__pydantic_complete__
