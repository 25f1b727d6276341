"""Knowledge-base wire and value models: retrieved chunks, sources shown to users."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RagMode = Literal["always", "auto", "off"]


class RetrievedChunk(BaseModel):
    """One search hit: the chunk's text and where it comes from."""

    model_config = ConfigDict(frozen=True)

    chunk_id: str
    knowledge_base: str
    version: int = Field(description="Index version the hit comes from.")
    source: str = Field(description="Path or URI of the source document.")
    title: str
    section: str = ""
    anchor: str = ""
    position: int = Field(description="0-based chunk number within the document.")
    start: int = Field(description="Character span of the chunk in the document's text.")
    end: int
    score: float = Field(description="Cosine similarity to the query.")
    text: str


class SourcePublic(BaseModel):
    """A source a reply was grounded in, as the chat shows it (and history keeps it)."""

    index: int = Field(description="The [n] the answer cites it by.")
    title: str
    snippet: str
    url: str | None = None
    source: str
    section: str = ""
    chunk_id: str
    knowledge_base: str
    version: int
    position: int
    start: int
    end: int
    score: float


class KnowledgeBasePublic(BaseModel):
    id: str
    name: str
    version: int
    documents: int
    chunks: int
    model: str
    index_kind: str
    mode: RagMode
    created_at: datetime


class KnowledgeBaseList(BaseModel):
    items: list[KnowledgeBasePublic]
    default: str | None = Field(
        None,
        description="The knowledge base a chat turn is grounded in when it names none "
        "(RAG_DEFAULT_KB), when it exists; the page's picker shows it selected.",
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, description="What to look for.")
    top_k: int | None = Field(None, ge=1, le=50, description="Hits wanted (default RAG_TOP_K).")
    score_threshold: float | None = Field(None, ge=-1, le=1, description="Lowest score kept.")


class SearchResult(BaseModel):
    items: list[RetrievedChunk]


class RagOptions(BaseModel):
    """The RAG fields a /v1 chat completion may carry (extensions to OpenAI's request)."""

    model_config = ConfigDict(extra="ignore")

    knowledge_base_id: str | None = Field(None, max_length=64)
    rag: RagMode | None = None
