"""OpenAI-compatible POST /v1/embeddings: texts embedded by the knowledge bases' model in
the retrieval deployment (`chatapp/openai_api/embeddings.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from chatapp.errors import NotFound
from chatapp.openai_api.embeddings import EmbeddingRequest, embedding_list, model_names, texts_of
from deployments.ingress.deps import ApiChatUser, StateDep

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, state: StateDep, _user: ApiChatUser
) -> dict[str, Any]:
    settings = state.settings
    if state.retrieval is None:
        raise NotFound("embeddings are off: the retrieval deployment is disabled (RAG_ENABLED)")
    texts = texts_of(body, rag=settings.rag, limits=settings.embeddings)
    result = await state.retrieval.embed(
        texts, max_input_tokens=settings.embeddings.max_input_tokens
    )
    return embedding_list(body, result, model=model_names(settings.rag)[0])
