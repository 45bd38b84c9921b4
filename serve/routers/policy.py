"""The RL sizing policy: status, hot swap, shadow candidate, promotion (admin).

Checkpoints are named by the caller but loaded only from the configured checkpoint roots
(`decisions.sizer.checkpoint_roots`): the policy server resolves the path and refuses anything outside them.
"""
from fastapi import APIRouter, Depends
from pydantic import Field

from serve.deps import Body, error, get_api, require, responses

router = APIRouter(tags=["policy"])


class PolicyCheckpointBody(Body):
    checkpoint: str | None = Field(None, max_length=1_024,
                                   description="a `python -m tune.rl` checkpoint dir under a configured checkpoint root; "
                                               "null clears the shadow")


@router.get("/api/policy", responses=responses(401, 403, 409, 503))
async def policy_status(api=Depends(get_api), who=require("read")) -> dict:
    return await api.policy().status.remote()


@router.post("/api/policy/swap", responses=responses(401, 403, 409, 413, 422, 503))
async def policy_swap(body: PolicyCheckpointBody, api=Depends(get_api), who=require("admin")) -> dict:
    if not body.checkpoint:
        raise error(422, ["body", "checkpoint"], "checkpoint: required for a swap, got null", "missing", None)
    return await api.policy().swap.remote(body.checkpoint)


@router.post("/api/policy/shadow", responses=responses(401, 403, 409, 413, 422, 503))
async def policy_shadow(body: PolicyCheckpointBody, api=Depends(get_api), who=require("admin")) -> dict:
    return await api.policy().set_shadow.remote(body.checkpoint)


@router.post("/api/policy/promote", responses=responses(401, 403, 409, 422, 503))
async def policy_promote(api=Depends(get_api), who=require("admin")) -> dict:
    return await api.policy().promote_shadow.remote()
