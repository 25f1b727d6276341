"""Grounding a turn in retrieved chunks: which to use (by RAG mode) and how the prompt
numbers them, so the answer can cite `[n]` and the user can check each source."""

from __future__ import annotations

from collections.abc import Sequence

from chatapp.rag.schemas import RagMode, RetrievedChunk, SourcePublic

INSTRUCTIONS = (
    "Answer using the numbered sources below when they are relevant, and cite them "
    "like [1]. If they do not contain the answer, say so and answer from general knowledge."
)


def select_sources(
    hits: Sequence[RetrievedChunk], *, mode: RagMode, auto_threshold: float
) -> list[RetrievedChunk]:
    """The hits a turn is grounded in: all of them in 'always', none in 'off', and in
    'auto' all of them only when the best one scores at least `auto_threshold`."""
    if mode == "off" or not hits:
        return []
    if mode == "auto" and max(h.score for h in hits) < auto_threshold:
        return []
    return sorted(hits, key=lambda h: -h.score)


def label(hit: RetrievedChunk) -> str:
    return f"{hit.title} — {hit.section}" if hit.section and hit.section != hit.title else hit.title


def grounded_system_prompt(system_prompt: str, sources: Sequence[RetrievedChunk]) -> str:
    """The system prompt with the numbered sources appended."""
    if not sources:
        return system_prompt
    blocks = [
        f"[{i}] {label(hit)} ({hit.source})\n{hit.text.strip()}"
        for i, hit in enumerate(sources, start=1)
    ]
    return f"{system_prompt}\n\n{INSTRUCTIONS}\n\nSources:\n\n" + "\n\n".join(blocks)


def public_sources(sources: Sequence[RetrievedChunk], *, snippet_chars: int) -> list[SourcePublic]:
    """What the reply carries (and history keeps) about each numbered source."""
    out = []
    for i, hit in enumerate(sources, start=1):
        text = " ".join(hit.text.split())
        snippet = text if len(text) <= snippet_chars else text[: snippet_chars - 1] + "…"
        url = hit.source if hit.source.startswith(("http://", "https://")) else None
        out.append(
            SourcePublic(
                index=i,
                title=label(hit),
                snippet=snippet,
                url=url,
                source=hit.source + (f"#{hit.anchor}" if hit.anchor else ""),
                section=hit.section,
                chunk_id=hit.chunk_id,
                knowledge_base=hit.knowledge_base,
                version=hit.version,
                position=hit.position,
                start=hit.start,
                end=hit.end,
                score=round(hit.score, 4),
            )
        )
    return out
