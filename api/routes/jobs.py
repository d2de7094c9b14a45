"""Background jobs of this API process (training a new model's first champion)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Executor, Viewer
from api.problems import Problem
from driftpilot.execution.inprocess import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=list[Job])
def list_jobs(ex: Executor, _: Viewer) -> list[Job]:
    """The jobs this process ran or runs, newest first (a restart forgets them; the models
    they created stay)."""
    return ex.jobs()


@router.get("/{job_id}", response_model=Job, responses={404: {"description": "Unknown job"}})
def get_job(job_id: str, ex: Executor, _: Viewer) -> Job:
    """One job: pending, running, success (with the model it made) or error (with why)."""
    job = ex.job(job_id)
    if job is None:
        raise Problem(404, f"no job {job_id!r} in this process (jobs are forgotten on restart)")
    return job
