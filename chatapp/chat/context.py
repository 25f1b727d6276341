"""Fitting a prompt to a model's context window: the system message plus as many recent
turns as fit, counted with the model's own tokenizer, with room left for the reply. The
prompt itself is assembled by the chat service (`chatapp/chat/service.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from chatapp.errors import ContextWindowExceeded
from chatapp.llm.base import ChatMessage


def fit_messages(
    messages: Sequence[ChatMessage],
    *,
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    context_window: int,
    reserve_tokens: int,
) -> list[ChatMessage]:
    """Keep leading system messages and as many of the most recent turns as fit.

    `count_tokens` is the model's own counter (chat template included). The reply gets
    `reserve_tokens`. The newest message is always kept; if it alone does not fit,
    `ContextWindowExceeded` says by how much.
    """
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system, turns = list(messages[:head]), list(messages[head:])
    budget = context_window - reserve_tokens
    if not turns:
        return system

    def fits(k: int) -> bool:
        return count_tokens(system + turns[len(turns) - k :]) <= budget

    if not fits(1):
        needed = count_tokens(system + turns[-1:])
        raise ContextWindowExceeded(
            f"the prompt needs {needed} tokens but only {budget} fit in the model's "
            f"{context_window}-token window after reserving {reserve_tokens} for the reply; "
            "send a shorter message or ask for fewer max_tokens"
        )
    lo, hi = 1, len(turns)  # invariant: fits(lo)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    kept = turns[len(turns) - lo :]
    # A reply without the question it answers is noise, and a tool's result without the
    # call it answers is refused by providers: start on a user turn if possible.
    while len(kept) > 1 and kept[0].role in ("assistant", "tool"):
        kept = kept[1:]
    return system + kept
