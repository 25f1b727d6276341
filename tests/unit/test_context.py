"""The prompt is the system prompt plus the most recent turns that fit the window."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from chatapp.chat.context import fit_messages
from chatapp.errors import ContextWindowExceeded
from chatapp.llm.base import ChatMessage


def words(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content.split()) + 2 for m in messages)


def convo(n: int) -> list[ChatMessage]:
    out = [ChatMessage("system", "be brief")]
    for i in range(n):
        out.append(ChatMessage("user", f"question {i} " + "x " * 8))
        out.append(ChatMessage("assistant", f"answer {i} " + "y " * 8))
    out.append(ChatMessage("user", "last question"))
    return out


def test_everything_kept_when_it_fits() -> None:
    messages = convo(3)
    assert (
        fit_messages(messages, count_tokens=words, context_window=1000, reserve_tokens=100)
        == messages
    )


def test_oldest_turns_dropped_first_and_reply_room_kept() -> None:
    messages = convo(20)
    fitted = fit_messages(messages, count_tokens=words, context_window=200, reserve_tokens=50)
    assert fitted[0] == messages[0]  # system prompt always first
    assert fitted[-1] == messages[-1]  # newest message always kept
    assert words(fitted) <= 150
    # the kept turns are the most recent ones, contiguous, starting with a user turn
    assert fitted[1:] == messages[len(messages) - (len(fitted) - 1) :]
    assert fitted[1].role == "user"
    # and no more turns would have fit
    one_more = [messages[0], *messages[len(messages) - len(fitted) :]]
    assert words(one_more) > 150 or fitted[1].role == "user"


def test_a_message_too_long_for_the_window_is_a_clear_error() -> None:
    messages = [ChatMessage("system", "s"), ChatMessage("user", "x " * 500)]
    with pytest.raises(ContextWindowExceeded, match="fit in the model's 256-token window"):
        fit_messages(messages, count_tokens=words, context_window=256, reserve_tokens=64)
