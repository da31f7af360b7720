"""How a run is carried out, as opposed to what it computes (the spec): where results go and how the cache
is used. One object, so the CLI, `run_spec`, deployments and sweeps pass the same thing everywhere."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifacts: Optional[str] = Field(None, description="Artifact root; default $TRAINFLOW_ARTIFACTS or ./artifacts.")
    refresh: bool = Field(False, description="Recompute every task (every trial's too) and overwrite its cache entry.")
    use_cache: bool = Field(True, description="Read and write the task cache; false leaves no task cached.")
    run_token: Optional[str] = Field(None, description="Recorded in the manifest of the version this run publishes, "
                                     "so a run that fails afterwards can say which version it left (flows.process.outcome).")
