"""Images in chat messages: what ChatApp accepts and how it reads them.

An image is an `ImagePart` holding either an https URL, handed to the provider as it is
(ChatApp never fetches it: no server-side request to an address a client chose), or a
`data:<media type>;base64,<data>` URL, whose decoded size and count per request are
bounded by settings (`CHAT_MAX_IMAGES`, `CHAT_MAX_IMAGE_BYTES`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chatapp.errors import InvalidRequest, PayloadTooLarge, Unsupported
from chatapp.llm.base import ChatMessage, ImagePart

# What OpenAI and Anthropic both read.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class InlineImage:
    """A `data:` URL's image: its media type and its base64 text (as sent)."""

    media_type: str
    data: str

    @property
    def size(self) -> int:
        """Decoded bytes, from the base64 length (the text was checked by `inline`)."""
        return len(self.data) * 3 // 4 - self.data[-2:].count("=")


def inline(image: ImagePart) -> InlineImage | None:
    """The image of a `data:` URL, None for an https URL; anything else is refused."""
    url = image.url
    if url.startswith("https://"):
        return None
    match = _DATA_URL.fullmatch(url)
    if match is None:
        if url.startswith("data:"):
            raise InvalidRequest("image_url: a data URL must be data:<media type>;base64,<data>")
        raise Unsupported(
            "image_url: only https:// URLs and data: URLs (base64) are accepted; "
            "ChatApp does not fetch other addresses"
        )
    media_type = match["type"].lower()
    if media_type not in IMAGE_TYPES:
        raise Unsupported(
            f"image_url: images of type {media_type} are not accepted; send one of "
            f"{', '.join(sorted(IMAGE_TYPES))}"
        )
    data = "".join(match["data"].split())
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("image_url: the data URL is not valid base64") from exc
    if not data:
        raise InvalidRequest("image_url: the data URL holds no image")
    return InlineImage(media_type, data)


def check_images(messages: Sequence[ChatMessage], *, max_images: int, max_bytes: int) -> int:
    """Check every image of a request against the limits; returns how many there are.
    Too many images, or one too large, is `PayloadTooLarge` (413)."""
    images = [image for m in messages for image in m.images]
    if len(images) > max_images:
        raise PayloadTooLarge(
            f"messages: {len(images)} images in one request; at most {max_images} are accepted"
        )
    for image in images:
        data = inline(image)
        if data is not None and data.size > max_bytes:
            raise PayloadTooLarge(
                f"image_url: an image of {data.size} bytes is over the limit of "
                f"{max_bytes} bytes per image"
            )
    return len(images)
