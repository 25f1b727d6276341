"""/api/knowledge-bases: the indexes a chat can be grounded in, users' own ones (create,
upload files, follow the index job, share read-only, delete), and search over one.

The web page shows its knowledge-base picker when the list is not empty and then sends
`knowledge_base_id` with each message. A user's knowledge base is 404 to everyone but
its owner and the users it is shared with."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from chatapp.errors import InvalidRequest, NotFound
from chatapp.rag.schemas import (
    KnowledgeBaseCreate,
    KnowledgeBaseList,
    KnowledgeBasePublic,
    KnowledgeBaseUpdate,
    KnowledgeFileList,
    ReaderCreate,
    ReaderList,
    ReaderPublic,
    SearchRequest,
    SearchResult,
    SharedBuildRequest,
    UploadResult,
)
from chatapp.rag.uploads import too_large
from deployments.handles import RetrievalHandle
from deployments.ingress.deps import CurrentAdmin, CurrentUser, IngressState, SessionDep, StateDep

router = APIRouter(prefix="/api/knowledge-bases", tags=["knowledge bases"])
UPLOAD_PATH = "/api/knowledge-bases/{kb_id}/files"


def _retriever(state: IngressState) -> RetrievalHandle:
    if state.retrieval is None:
        raise NotFound("knowledge bases are disabled on this server (RAG_ENABLED=false)")
    return state.retrieval


@router.get("")
async def list_knowledge_bases(
    state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeBaseList:
    """The shared knowledge bases, yours and those shared with you, and the one a turn
    that names none is grounded in."""
    if state.retrieval is None:
        return KnowledgeBaseList(items=[], enabled=False)
    return await state.library.visible(session=session, user_id=user.id)


@router.post("", status_code=201)
async def create_knowledge_base(
    body: KnowledgeBaseCreate, state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeBasePublic:
    """A new, empty knowledge base of yours (422 over RAG_USER_MAX_KNOWLEDGE_BASES)."""
    _retriever(state)
    return await state.library.create(session=session, user_id=user.id, name=body.name)


@router.get("/{kb_id}")
async def get_knowledge_base(
    kb_id: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeBasePublic:
    """One knowledge base, with its index job's progress."""
    _retriever(state)
    return await state.library.get(session=session, user_id=user.id, kb=kb_id)


@router.patch("/{kb_id}")
async def rename_knowledge_base(
    kb_id: str, body: KnowledgeBaseUpdate, state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeBasePublic:
    return await state.library.rename(session=session, user_id=user.id, kb=kb_id, name=body.name)


@router.delete("/{kb_id}", status_code=204)
async def delete_knowledge_base(
    kb_id: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> Response:
    """Delete your knowledge base: its files and every index version."""
    await state.library.delete(session=session, user_id=user.id, kb=kb_id)
    return Response(status_code=204)


@router.get("/{kb_id}/files")
async def list_files(
    kb_id: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeFileList:
    """The files and how each was indexed (`error` says why one was not)."""
    files = await state.library.files(session=session, user_id=user.id, kb=kb_id)
    return KnowledgeFileList(items=files)


@router.post(
    "/{kb_id}/files",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                        "required": ["files"],
                    }
                }
            },
        }
    },
)
async def upload_files(
    kb_id: str, request: Request, state: StateDep, user: CurrentUser, session: SessionDep
) -> UploadResult:
    """Add files (.md, .txt, .html, .pdf, or a .zip of them) to your knowledge base as a
    multipart upload, each in a part named `files`; the index is rebuilt in the
    background (follow it with GET /api/knowledge-bases/{kb_id}). A file with a name
    already there replaces it. 413 over RAG_MAX_FILE_BYTES or your RAG_USER_QUOTA_BYTES,
    422 over RAG_MAX_FILES; files that are not documents are listed in `rejected`."""
    _retriever(state)
    rag = state.settings.rag
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the files as multipart/form-data, each in a part `files`")
    received: list[tuple[str, bytes]] = []
    async with request.form(max_files=rag.max_files, max_fields=8) as form:
        for part in form.getlist("files"):
            if not isinstance(part, UploadFile):
                raise InvalidRequest("`files` parts must be files")
            name = part.filename or ""
            if (
                part.size is not None
                and part.size > rag.max_file_bytes
                and not name.endswith(".zip")
            ):
                raise too_large(name, rag.max_file_bytes)
            received.append((name, await part.read()))
    if not received:
        raise InvalidRequest("no files: send each in a multipart part named `files`")
    return await state.library.upload(session=session, user_id=user.id, kb=kb_id, files=received)


@router.delete("/{kb_id}/files/{name:path}", status_code=202)
async def delete_file(
    kb_id: str, name: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> KnowledgeBasePublic:
    """Remove a file; the index is rebuilt without it."""
    return await state.library.delete_file(session=session, user_id=user.id, kb=kb_id, name=name)


@router.get("/{kb_id}/readers")
async def list_readers(
    kb_id: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> ReaderList:
    """Who your knowledge base is shared with."""
    readers = await state.library.readers(session=session, user_id=user.id, kb=kb_id)
    return ReaderList(items=readers)


@router.post("/{kb_id}/readers", status_code=201)
async def add_reader(
    kb_id: str, body: ReaderCreate, state: StateDep, user: CurrentUser, session: SessionDep
) -> ReaderPublic:
    """Share your knowledge base, read-only, with the user of `email`: they see it in
    their list, search it and chat over it; they cannot change or share it."""
    return await state.library.add_reader(
        session=session, user_id=user.id, kb=kb_id, email=body.email
    )


@router.delete("/{kb_id}/readers/{email}", status_code=204)
async def remove_reader(
    kb_id: str, email: str, state: StateDep, user: CurrentUser, session: SessionDep
) -> Response:
    await state.library.remove_reader(session=session, user_id=user.id, kb=kb_id, email=email)
    return Response(status_code=204)


@router.post("/{kb_id}/search")
async def search(
    kb_id: str, body: SearchRequest, state: StateDep, user: CurrentUser, session: SessionDep
) -> SearchResult:
    """The best chunks for `query`, best first (what a chat turn would be grounded in)."""
    retriever = _retriever(state)
    min_version = await state.library.searchable(session=session, user_id=user.id, kb=kb_id)
    hits = await retriever.search(
        body.query,
        kb_id,
        top_k=body.top_k,
        score_threshold=body.score_threshold,
        min_version=min_version,
    )
    return SearchResult(items=hits)


admin_router = APIRouter(prefix="/api/admin/knowledge-bases", tags=["knowledge bases"])


@admin_router.post("", status_code=202)
async def build_shared(
    body: SharedBuildRequest, state: StateDep, _admin: CurrentAdmin, session: SessionDep
) -> KnowledgeBasePublic:
    """Build or rebuild a shared knowledge base from files the server reads (folders,
    files, s3:// and other URIs), in the background: follow it with
    GET /api/knowledge-bases/{name}. Only changed files are embedded again unless `full`."""
    _retriever(state)
    return await state.library.build_shared(
        session=session, name=body.name, sources=body.sources, full=body.full
    )
