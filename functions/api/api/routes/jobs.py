"""Job definitions: `/jobs` and manual runs. Scopes: read:jobs / write:jobs."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header
from jobtracker_common.models import Job

from api.auth import READ_JOBS, WRITE_JOBS, secured
from api.deps import services
from api.models import JobIn, JobList, JobOut, RunAccepted
from api.routes.common import Cursor, JobId, Limit, caller, responses

router = Router()  # type: ignore[no-untyped-call]


def _out(job: Job) -> JobOut:
    return JobOut.of(job, services().jobs_service.next_fire_times(job))


@router.get(
    "/jobs",
    summary="List jobs (yours; every job for admins)",
    security=secured(READ_JOBS),
    responses=responses(200, "A page of jobs."),
    tags=["jobs"],
)
def list_jobs(limit: Limit = 50, cursor: Cursor = None) -> JobList:
    jobs, next_cursor = services().jobs_service.list_jobs(caller(router), limit=limit, cursor=cursor)
    return JobList(items=[_out(j) for j in jobs], next_cursor=next_cursor)


@router.post(
    "/jobs",
    summary="Create a job (and its EventBridge Scheduler schedule)",
    security=secured(WRITE_JOBS),
    status_code=201,
    responses=responses(201, "Created; includes `job_id` and `next_fire_times`.", 409, body=True),
    tags=["jobs"],
)
def create_job(body: JobIn) -> JobOut:
    return _out(services().jobs_service.create(caller(router), body))


@router.get(
    "/jobs/<job_id>",
    summary="Get a job",
    security=secured(READ_JOBS),
    responses=responses(200, "The job.", 404),
    tags=["jobs"],
)
def get_job(job_id: JobId) -> JobOut:
    return _out(services().jobs_service.get(caller(router), job_id))


@router.put(
    "/jobs/<job_id>",
    summary="Replace a job's definition (its schedule follows)",
    security=secured(WRITE_JOBS),
    responses=responses(200, "The job as stored now.", 404, 409, body=True),
    tags=["jobs"],
)
def replace_job(job_id: JobId, body: JobIn) -> JobOut:
    return _out(services().jobs_service.replace(caller(router), job_id, body))


@router.delete(
    "/jobs/<job_id>",
    summary="Delete a job and its schedule (its runs stay)",
    security=secured(WRITE_JOBS),
    status_code=204,
    responses=responses(204, "Deleted.", 404, 409, empty=True),
    tags=["jobs"],
)
def delete_job(job_id: JobId) -> Response[None]:
    services().jobs_service.delete(caller(router), job_id)
    return Response(status_code=204)


@router.post(
    "/jobs/<job_id>/run",
    summary="Run a job now (asynchronously); repeat-safe with an Idempotency-Key",
    security=secured(WRITE_JOBS),
    status_code=202,
    responses=responses(202, "Accepted: the run is queued.", 404, 409),
    tags=["jobs"],
)
def run_job(
    job_id: JobId,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=128,
            pattern=r"^[\x21-\x7e]+$",
            description="Client request id: the same key returns the same run.",
        ),
    ] = None,
) -> Response[RunAccepted]:
    run = services().jobs_service.run_now(caller(router), job_id, idempotency_key)
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=RunAccepted(run_id=run.run_id, status=run.status),
    )
