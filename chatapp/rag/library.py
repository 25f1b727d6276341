"""Knowledge bases as users see them: their own, those shared with them, shared ones.

- A user's knowledge base has an id of its own (`kb-` + 16 hex digits) that is also its
  folder in the index store and the upload store. Only its owner, and the users it is
  shared with (read-only), learn that it exists: to anyone else it is 404, in every
  route and in chat.
- Shared knowledge bases are everyone's: those the CLI builds (no row) and those an
  admin builds from server-side sources (a row without owner, for the job's progress).
- Limits are checked before anything is stored or queued: the size of each file and the
  user's total bytes (`PayloadTooLarge`, 413), the number of knowledge bases a user owns
  and of files in one (`InvalidRequest`, 422); each message names the limit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.chat.ports import Retriever
from chatapp.config import RagSettings
from chatapp.db.models import KnowledgeBase, KnowledgeFile, KnowledgeReader, User, utcnow
from chatapp.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from chatapp.rag.documents import content_hash
from chatapp.rag.embedder import model_label
from chatapp.rag.jobs import job_public, request_build, running
from chatapp.rag.schemas import (
    KnowledgeBaseAccess,
    KnowledgeBaseList,
    KnowledgeBasePublic,
    KnowledgeBaseStatus,
    KnowledgeFilePublic,
    ReaderPublic,
    RejectedFile,
    UploadResult,
)
from chatapp.rag.sources import list_source_files
from chatapp.rag.store import is_user_kb, store_for
from chatapp.rag.uploads import Rejected, Upload, UploadStore, mib, unpack


def _not_found(kb: str) -> NotFound:
    return NotFound(f"knowledge base {kb!r} not found")


class KnowledgeLibrary:
    """Create, fill, share and delete knowledge bases; decide who reads which."""

    def __init__(self, *, rag: RagSettings, retriever: Retriever | None) -> None:
        self._rag = rag
        self._retriever = retriever
        self._uploads = UploadStore(rag.upload_dir)
        self._model = model_label(rag.embedding_model)

    # -- reading ----------------------------------------------------------------------

    async def visible(self, *, session: AsyncSession, user_id: uuid.UUID) -> KnowledgeBaseList:
        """The shared knowledge bases, the user's own and those shared with them."""
        served = await self._retriever.knowledge_bases() if self._retriever else []
        shared = {kb.id: kb for kb in served if not is_user_kb(kb.id)}
        readable = select(KnowledgeReader.knowledge_base_id).where(
            KnowledgeReader.user_id == user_id
        )
        rows = list(
            await session.scalars(
                select(KnowledgeBase).where(
                    (KnowledgeBase.owner_id == user_id)
                    | (KnowledgeBase.owner_id.is_(None))
                    | KnowledgeBase.id.in_(readable)
                )
            )
        )
        owners = await self._owner_emails(session, rows)
        mine = []
        for row in rows:
            public = self._public(row, user_id=user_id, owners=owners, served=shared.get(row.id))
            if row.owner_id is None:
                shared[row.id] = public
            else:
                mine.append(public)
        items = sorted(shared.values(), key=lambda kb: kb.id) + sorted(
            mine, key=lambda kb: (kb.access != "owner", kb.name.lower(), kb.id)
        )
        default = self._rag.default_kb
        ready = any(kb.id == default and kb.version is not None for kb in items)
        return KnowledgeBaseList(items=items, default=default if ready else None)

    async def get(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str
    ) -> KnowledgeBasePublic:
        """One knowledge base the user may read (`NotFound` otherwise)."""
        if not is_user_kb(kb):
            row = await session.get(KnowledgeBase, kb)
            for served in await self._retriever.knowledge_bases() if self._retriever else []:
                if served.id == kb:
                    return self._public(row, user_id=user_id, served=served) if row else served
            if row is None:
                raise _not_found(kb)
            return self._public(row, user_id=user_id)
        row = await self._readable(session, user_id, kb)
        owners = await self._owner_emails(session, [row])
        return self._public(row, user_id=user_id, owners=owners)

    async def searchable(self, *, session: AsyncSession, user_id: uuid.UUID, kb: str) -> int | None:
        """Check that the user may search `kb` now; the index version they must see at
        least (their latest build), None for shared ones. `NotFound` for one they may
        not read, `Conflict` for one of theirs with no index yet."""
        if not is_user_kb(kb):
            return None
        row = await self._readable(session, user_id, kb)
        if row.index_version is None:
            raise Conflict(
                f"knowledge base {row.name!r} has no index yet: "
                + ("it is being built" if row.requested > row.built else "upload files to it")
            )
        return row.index_version

    async def files(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str
    ) -> list[KnowledgeFilePublic]:
        await self._readable(session, user_id, kb)
        rows = await session.scalars(
            select(KnowledgeFile)
            .where(KnowledgeFile.knowledge_base_id == kb)
            .order_by(KnowledgeFile.name)
        )
        return [KnowledgeFilePublic.model_validate(row) for row in rows]

    # -- changing ---------------------------------------------------------------------

    async def create(
        self, *, session: AsyncSession, user_id: uuid.UUID, name: str
    ) -> KnowledgeBasePublic:
        owned = await session.scalar(
            select(func.count()).select_from(KnowledgeBase).where(KnowledgeBase.owner_id == user_id)
        )
        limit = self._rag.user_max_knowledge_bases
        if (owned or 0) >= limit:
            raise InvalidRequest(
                f"you have {owned} knowledge bases, the most a user may have "
                f"(RAG_USER_MAX_KNOWLEDGE_BASES={limit}); delete one first"
            )
        row = _new_row(f"kb-{uuid.uuid4().hex[:16]}", _display_name(name), owner_id=user_id)
        session.add(row)
        await session.commit()
        return self._public(row, user_id=user_id)

    async def rename(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str, name: str
    ) -> KnowledgeBasePublic:
        row = await self._owned(session, user_id, kb)
        row.name = _display_name(name)
        await session.commit()
        return self._public(row, user_id=user_id)

    async def delete(self, *, session: AsyncSession, user_id: uuid.UUID, kb: str) -> None:
        """The knowledge base, its files and every index version of it."""
        row = await self._owned(session, user_id, kb)
        await session.delete(row)
        await session.commit()
        await asyncio.to_thread(self._remove_artifacts, kb)

    def _remove_artifacts(self, kb: str) -> None:
        self._uploads.delete_all(kb)
        store_for(self._rag).delete(kb)

    async def upload(
        self,
        *,
        session: AsyncSession,
        user_id: uuid.UUID,
        kb: str,
        files: Sequence[tuple[str, bytes]],
    ) -> UploadResult:
        """Store `files` (name, bytes) in the user's knowledge base and queue its build.
        All limits are checked first; nothing is stored when one is exceeded."""
        row = await self._owned(session, user_id, kb, lock=True)
        uploads: dict[str, Upload] = {}
        rejected: list[Rejected] = []
        for filename, data in files:
            accepted, refused = await asyncio.to_thread(
                unpack, filename, data, max_file_bytes=self._rag.max_file_bytes
            )
            rejected.extend(refused)
            uploads.update((u.name, u) for u in accepted)  # a later one of a name wins
        if not uploads:
            detail = "; ".join(r.error for r in rejected) or "no files were sent"
            raise InvalidRequest(f"nothing to index: {detail}")
        existing = {
            f.name: f
            for f in await session.scalars(
                select(KnowledgeFile).where(KnowledgeFile.knowledge_base_id == kb)
            )
        }
        await self._check_limits(session, user_id, row, uploads, existing)
        now = utcnow()
        stored = []
        for upload in uploads.values():
            await asyncio.to_thread(self._uploads.write, kb, upload)
            file = existing.get(upload.name)
            if file is None:
                file = KnowledgeFile(knowledge_base_id=kb, name=upload.name)
                session.add(file)
            row.bytes += len(upload.data) - (file.bytes or 0)
            file.bytes, file.sha256 = len(upload.data), content_hash(upload.data)
            file.status, file.error, file.uploaded_at = "pending", None, now
            stored.append(file)
        await request_build(session, kb)
        await session.commit()
        await session.refresh(row)
        return UploadResult(
            files=[KnowledgeFilePublic.model_validate(f) for f in stored],
            rejected=[RejectedFile(name=r.name, error=r.error) for r in rejected],
            knowledge_base=self._public(row, user_id=user_id),
        )

    async def _check_limits(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        row: KnowledgeBase,
        uploads: dict[str, Upload],
        existing: dict[str, KnowledgeFile],
    ) -> None:
        count = len(existing.keys() | uploads.keys())
        if count > self._rag.max_files:
            raise InvalidRequest(
                f"{row.name!r} would hold {count} files, more than the {self._rag.max_files} "
                "a knowledge base may hold (RAG_MAX_FILES)"
            )
        used = await session.scalar(
            select(func.coalesce(func.sum(KnowledgeBase.bytes), 0)).where(
                KnowledgeBase.owner_id == user_id
            )
        )
        replaced = sum(existing[n].bytes for n in uploads if n in existing)
        after = int(used or 0) - replaced + sum(len(u.data) for u in uploads.values())
        quota = self._rag.user_quota_bytes
        if after > quota:
            raise PayloadTooLarge(
                f"these files would bring your knowledge bases to {mib(after)}, over your "
                f"{mib(quota)} quota (RAG_USER_QUOTA_BYTES); delete files or knowledge bases"
            )

    async def delete_file(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str, name: str
    ) -> KnowledgeBasePublic:
        """Remove a file; the index is rebuilt without it."""
        row = await self._owned(session, user_id, kb, lock=True)
        file = await session.get(KnowledgeFile, (kb, name))
        if file is None:
            raise NotFound(f"{row.name!r} has no file {name!r}")
        row.bytes -= file.bytes
        await session.delete(file)
        await request_build(session, kb)
        await session.commit()
        await asyncio.to_thread(self._uploads.delete, kb, name)
        await session.refresh(row)
        return self._public(row, user_id=user_id)

    # -- sharing ----------------------------------------------------------------------

    async def readers(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str
    ) -> list[ReaderPublic]:
        await self._owned(session, user_id, kb)
        rows = await session.execute(
            select(User.email, KnowledgeReader.created_at)
            .join(User, User.id == KnowledgeReader.user_id)
            .where(KnowledgeReader.knowledge_base_id == kb)
            .order_by(User.email)
        )
        return [ReaderPublic(email=email, created_at=at) for email, at in rows]

    async def add_reader(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str, email: str
    ) -> ReaderPublic:
        """Share the knowledge base read-only with the user of `email`."""
        await self._owned(session, user_id, kb)
        reader = await session.scalar(select(User).where(User.email == email.strip().lower()))
        if reader is None or not reader.is_active:
            raise NotFound(f"no user with email {email!r}")
        if reader.id == user_id:
            raise InvalidRequest("this knowledge base is yours already")
        grant = await session.get(KnowledgeReader, (kb, reader.id))
        if grant is None:
            grant = KnowledgeReader(knowledge_base_id=kb, user_id=reader.id, created_at=utcnow())
            session.add(grant)
            await session.commit()
        return ReaderPublic(email=reader.email, created_at=grant.created_at)

    async def remove_reader(
        self, *, session: AsyncSession, user_id: uuid.UUID, kb: str, email: str
    ) -> None:
        await self._owned(session, user_id, kb)
        reader = await session.scalar(select(User).where(User.email == email.strip().lower()))
        grant = await session.get(KnowledgeReader, (kb, reader.id)) if reader else None
        if grant is None:
            raise NotFound(f"knowledge base {kb!r} is not shared with {email!r}")
        await session.delete(grant)
        await session.commit()

    # -- shared knowledge bases (admins) ----------------------------------------------

    async def build_shared(
        self, *, session: AsyncSession, name: str, sources: list[str], full: bool
    ) -> KnowledgeBasePublic:
        """Queue a build of shared knowledge base `name` from server-side `sources`."""
        if is_user_kb(name):
            raise InvalidRequest(f"{name!r}: names like kb-<16 hex digits> are users' own")
        for source in sources:  # InvalidRequest now, not a failed job later
            await asyncio.to_thread(list_source_files, source)
        row = await session.get(KnowledgeBase, name, with_for_update=True)
        if row is not None and row.owner_id is not None:  # pragma: no cover - ids differ
            raise Conflict(f"{name!r} is a user's knowledge base")
        if row is None:
            row = _new_row(name, name, owner_id=None)
            session.add(row)
        row.sources = list(sources)
        await session.flush()
        await request_build(session, name, full=full)
        await session.commit()
        await session.refresh(row)
        return self._public(row, user_id=None)

    # -- helpers ----------------------------------------------------------------------

    async def _readable(self, session: AsyncSession, user_id: uuid.UUID, kb: str) -> KnowledgeBase:
        row = await session.get(KnowledgeBase, kb) if is_user_kb(kb) else None
        if row is None:
            raise _not_found(kb)
        if row.owner_id != user_id and not await session.get(KnowledgeReader, (kb, user_id)):
            raise _not_found(kb)
        return row

    async def _owned(
        self, session: AsyncSession, user_id: uuid.UUID, kb: str, *, lock: bool = False
    ) -> KnowledgeBase:
        """The user's own knowledge base. Readers get `NotFound` too: what they cannot
        change they are not told about beyond reading it."""
        row = await session.get(KnowledgeBase, kb, with_for_update=lock) if is_user_kb(kb) else None
        if row is None or row.owner_id != user_id:
            raise _not_found(kb)
        return row

    @staticmethod
    async def _owner_emails(
        session: AsyncSession, rows: Sequence[KnowledgeBase]
    ) -> dict[uuid.UUID, str]:
        ids = {row.owner_id for row in rows if row.owner_id is not None}
        if not ids:
            return {}
        found = await session.execute(select(User.id, User.email).where(User.id.in_(ids)))
        return dict(found.tuples().all())

    def _public(
        self,
        row: KnowledgeBase,
        *,
        user_id: uuid.UUID | None,
        owners: dict[uuid.UUID, str] | None = None,
        served: KnowledgeBasePublic | None = None,
    ) -> KnowledgeBasePublic:
        now = utcnow()
        job = job_public(row, now=now)
        access: KnowledgeBaseAccess = (
            "shared" if row.owner_id is None else "owner" if row.owner_id == user_id else "reader"
        )
        version = served.version if served else row.index_version
        status: KnowledgeBaseStatus
        if row.requested > row.built:
            status = "indexing" if running(row, now=now) else "queued"
        elif version is not None:
            status = "ready"
        elif row.job_status == "failed":
            status = "failed"
        else:
            status = "empty"
        return KnowledgeBasePublic(
            id=row.id,
            name=row.name,
            access=access,
            owner=(owners or {}).get(row.owner_id) if access == "reader" and row.owner_id else None,
            status=status,
            version=version,
            documents=served.documents if served else row.documents,
            chunks=served.chunks if served else row.chunks,
            model=served.model if served else (self._model if version is not None else None),
            index_kind=served.index_kind if served else row.index_kind,
            mode=self._rag.mode_of(row.id),
            bytes=row.bytes,
            created_at=row.created_at,
            job=job,
        )


class LibraryAccess:
    """The chat service's `KnowledgeAccess` over the library: a database read only for
    users' own knowledge bases (shared ones are everyone's)."""

    def __init__(
        self, library: KnowledgeLibrary, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        self._library = library
        self._sessionmaker = sessionmaker

    async def searchable(self, user_id: uuid.UUID, knowledge_base: str) -> int | None:
        if not is_user_kb(knowledge_base):
            return None
        async with self._sessionmaker() as session:
            return await self._library.searchable(
                session=session, user_id=user_id, kb=knowledge_base
            )


def _new_row(kb: str, name: str, *, owner_id: uuid.UUID | None) -> KnowledgeBase:
    """A knowledge base's row with its counters set (the columns' defaults apply only at
    insert, and the row is shown before that)."""
    return KnowledgeBase(
        id=kb, name=name, owner_id=owner_id, created_at=utcnow(),
        bytes=0, requested=0, built=0, full=False, documents=0, chunks=0,
        files_total=0, files_done=0, chunks_total=0, chunks_done=0,
    )  # fmt: skip


def _display_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidRequest("name: empty; give the knowledge base a name")
    return name[:100]
