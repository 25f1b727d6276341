"""/api/knowledge-bases: the indexes a chat can be grounded in, and search over one.

The web page shows its knowledge-base picker when the list is not empty and then sends
`knowledge_base_id` with each message."""

from __future__ import annotations

from fastapi import APIRouter

from chatapp.errors import NotFound
from chatapp.rag.schemas import (
    KnowledgeBaseList,
    KnowledgeBasePublic,
    SearchRequest,
    SearchResult,
)
from deployments.handles import RetrievalHandle
from deployments.ingress.deps import CurrentUser, IngressState, StateDep

router = APIRouter(prefix="/api/knowledge-bases", tags=["knowledge bases"])


def _retriever(state: IngressState) -> RetrievalHandle:
    if state.retrieval is None:
        raise NotFound("knowledge bases are disabled on this server (RAG_ENABLED=false)")
    return state.retrieval


@router.get("")
async def list_knowledge_bases(state: StateDep, _user: CurrentUser) -> KnowledgeBaseList:
    """Knowledge bases with their newest served version, and the one a turn that names
    none is grounded in."""
    if state.retrieval is None:
        return KnowledgeBaseList(items=[])
    items = await state.retrieval.knowledge_bases()
    default = state.settings.rag.default_kb
    return KnowledgeBaseList(
        items=items, default=default if any(kb.id == default for kb in items) else None
    )


@router.get("/{kb_id}")
async def get_knowledge_base(
    kb_id: str, state: StateDep, _user: CurrentUser
) -> KnowledgeBasePublic:
    for kb in await _retriever(state).knowledge_bases():
        if kb.id == kb_id:
            return kb
    raise NotFound(f"knowledge base {kb_id!r} not found")


@router.post("/{kb_id}/search")
async def search(
    kb_id: str, body: SearchRequest, state: StateDep, _user: CurrentUser
) -> SearchResult:
    """The best chunks for `query`, best first (what a chat turn would be grounded in)."""
    hits = await _retriever(state).search(
        body.query, kb_id, top_k=body.top_k, score_threshold=body.score_threshold
    )
    return SearchResult(items=hits)
