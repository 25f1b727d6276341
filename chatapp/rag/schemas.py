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


KnowledgeBaseAccess = Literal["shared", "owner", "reader"]
KnowledgeBaseStatus = Literal["empty", "queued", "indexing", "ready", "failed"]
JobStatus = Literal["queued", "running", "done", "failed"]
JobPhase = Literal["queued", "reading", "embedding", "writing", "done", "failed"]


class IndexJobPublic(BaseModel):
    """The newest index build of a knowledge base, and how far it got."""

    status: JobStatus
    phase: JobPhase
    files_total: int = Field(description="Files the build reads.")
    files_done: int
    chunks_total: int = Field(description="Chunks to embed (known once files are read).")
    chunks_done: int
    percent: int = Field(ge=0, le=100)
    error: str | None = Field(None, description="Why the build failed (files: their own).")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class KnowledgeBasePublic(BaseModel):
    id: str = Field(description="What chats and searches name it by.")
    name: str
    access: KnowledgeBaseAccess = Field(
        "shared",
        description="shared: everyone reads it; owner: yours; reader: shared with you.",
    )
    owner: str | None = Field(None, description="Its owner's email, when shared with you.")
    status: KnowledgeBaseStatus = "ready"
    version: int | None = Field(None, description="Newest index version; None before one.")
    documents: int = 0
    chunks: int = 0
    model: str | None = None
    index_kind: str | None = None
    mode: RagMode = "auto"
    bytes: int = Field(0, description="Bytes of the files uploaded to it.")
    created_at: datetime
    job: IndexJobPublic | None = None


class KnowledgeBaseList(BaseModel):
    items: list[KnowledgeBasePublic]
    enabled: bool = Field(
        True,
        description="False when this server runs without knowledge bases (RAG_ENABLED=false): "
        "none can be created, searched or chatted over; the page hides its knowledge-base "
        "controls.",
    )
    default: str | None = Field(
        None,
        description="The knowledge base a chat turn is grounded in when it names none "
        "(RAG_DEFAULT_KB), when it exists; the page's picker shows it selected.",
    )


class KnowledgeBaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100, description="Shown in the picker.")


class KnowledgeBaseUpdate(KnowledgeBaseCreate):
    pass


class SharedBuildRequest(BaseModel):
    """An admin's build of a shared knowledge base from files the server can read."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Its id.")
    sources: list[str] = Field(
        ..., min_length=1, max_length=100, description="Folders, files or URIs (s3://, ...)."
    )
    full: bool = Field(False, description="Embed everything again, not only changed files.")


class KnowledgeFilePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    bytes: int
    status: Literal["pending", "indexed", "error"]
    error: str | None = None
    uploaded_at: datetime


class KnowledgeFileList(BaseModel):
    items: list[KnowledgeFilePublic]


class RejectedFile(BaseModel):
    name: str
    error: str


class UploadResult(BaseModel):
    files: list[KnowledgeFilePublic] = Field(description="Stored, to be indexed.")
    rejected: list[RejectedFile] = Field(description="Left out, each with its reason.")
    knowledge_base: KnowledgeBasePublic


class ReaderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(..., min_length=3, max_length=320)


class ReaderPublic(BaseModel):
    email: str
    created_at: datetime


class ReaderList(BaseModel):
    items: list[ReaderPublic]


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
