"""``/v1/batches``: a JSONL file of ``{custom_id, body}`` lines, one job per line (on the model's
batch lane, created atomically; see :mod:`rerankd.api.batch_service`); the caller's batches, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from rerankd.api import listing
from rerankd.api.batch_service import MAX_RESULTS_LIMIT
from rerankd.api.errors import ApiError
from rerankd.api.openapi import BATCH_BODY, errors
from rerankd.api.routers.deps import Batches, Owner, Service
from rerankd.api.schemas import BatchListOut, BatchOut

router = APIRouter(prefix="/v1/batches", tags=["batches"])
RESULTS_200 = {
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    "description": "JSON Lines: one `{custom_id, response}` or `{custom_id, error}` per line.",
}


async def read_batch_body(request: Request) -> bytes:
    """The JSONL file: the raw body, or the ``file`` part of a multipart form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form()
        except HTTPException as e:  # starlette's answer to a malformed form is a bare 400
            raise ApiError(422, f"file: malformed multipart body ({e.detail})", field="file") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "multipart batch upload needs a 'file' field", field="file")
        return await upload.read()
    return await request.body()


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={202: {"model": BatchOut}, **errors(401, 404, 409, 413, 422, 429, 503)},
    openapi_extra=BATCH_BODY,
)
async def create_batch(
    request: Request,
    batches: Batches,
    owner: Owner,
    model: str | None = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A JSONL file of ``{custom_id, body}`` lines -> one job per line, all or none.  Same
    Idempotency-Key and file: the same batch (``Idempotent-Replayed: true``); another file: 409."""
    out, replayed = await batches.create(owner, await read_batch_body(request), model, idempotency_key)
    headers = {"Location": f"/v1/batches/{out['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(out, status_code=202, headers=headers)


@router.get(
    "",
    response_model=BatchListOut,
    response_model_exclude_unset=True,
    responses=errors(401, 422, 503),
    description="The caller's batches with their progress (`model`/`strategy`: batches with a line of it)."
    + listing.PAGE_DOC,
)
async def list_batches(
    svc: Service,
    owner: Owner,
    status: Annotated[str | None, Query(description="`in_progress` or `completed`.")] = None,
    model: listing.Model = None,
    strategy: listing.Strategy = None,
    created_after: listing.After = None,
    created_before: listing.Before = None,
    cursor: listing.Cursor = None,
    limit: listing.Limit = 20,
) -> dict[str, Any]:
    filters = listing.parse_filters(status, model, strategy, created_after, created_before, listing.BATCH_STATUSES)
    return await listing.list_batches(svc.store, owner, filters, cursor, limit)


@router.get("/{batch_id}", response_model=BatchOut, response_model_exclude_unset=True, responses=errors(401, 404, 503))
async def get_batch(batch_id: str, batches: Batches, owner: Owner) -> dict[str, Any]:
    """A batch's status and counts by job status."""
    return await batches.status(batch_id, owner)


@router.post(
    "/{batch_id}/cancel",
    response_model=BatchOut,
    response_model_exclude_unset=True,
    responses=errors(401, 404, 413, 503),
)
async def cancel_batch(batch_id: str, batches: Batches, owner: Owner) -> dict[str, Any]:
    """Cancel every job of a batch that has not finished."""
    return await batches.cancel(batch_id, owner)


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={200: RESULTS_200, **errors(401, 404, 409, 422, 503)},
)
async def batch_results(
    batch_id: str,
    batches: Batches,
    owner: Owner,
    cursor: Annotated[int, Query(ge=0, le=10**9, description="Index of the first line (0-based).")] = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_RESULTS_LIMIT, description="Lines to return (default: all from cursor on).")
    ] = None,
) -> StreamingResponse:
    """Per-line results as JSONL, in input order: ``{custom_id, response}`` or ``{custom_id, error}``,
    streamed page by page.  When lines remain after this page: ``Link: <...?cursor=N&limit=L>;
    rel="next"`` and ``X-Next-Cursor: N``."""
    stream, next_cursor = await batches.results(batch_id, owner, cursor, limit)
    headers = {}
    if next_cursor is not None:
        headers["Link"] = f'</v1/batches/{batch_id}/results?cursor={next_cursor}&limit={limit}>; rel="next"'
        headers["X-Next-Cursor"] = str(next_cursor)
    return StreamingResponse(stream, media_type="application/x-ndjson", headers=headers)
