"""``GET /v1/models``: the names a request's ``model`` may take."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.schemas import ModelsOut

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsOut, response_model_exclude_unset=True, responses=errors(401, 503))
async def list_models(svc: Service, owner: Owner) -> dict[str, Any]:
    """The names a request's ``model`` may take, with the model and strategy each runs."""
    s = svc.settings
    data = []
    for name in dict.fromkeys([s.default_alias, *s.aliases, *s.served_models()]):
        model, strategy = s.resolve_model(name)
        data.append({"id": name, "object": "model", "model": model, "strategy": strategy.model_dump()})
    return {"object": "list", "data": data}
