"""The web chat page: the built front end (`chatapp/web/dist`, from `npm run build`)
served at `/`, mounted after every API route so those keep precedence."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

import chatapp

logger = logging.getLogger(__name__)

WEB_DIST = Path(chatapp.__file__).resolve().parent / "web" / "dist"

# Paths the page never answers: an unknown API route stays an API 404.
_API_PREFIXES = ("/api/", "/v1/", "/docs/", "/openapi")


class WebFiles(StaticFiles):
    """Static files with `index.html` at `/`; hashed assets cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        here = "/" + path.lstrip("/")  # `path` is relative to the mount point
        api_path = any(here.startswith(p) or here + "/" == p for p in _API_PREFIXES)
        if api_path or scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=404, detail=f"{scope['path']} not found")
        response = await super().get_response(path, scope)
        if path.startswith("assets/"):
            response.headers["cache-control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["cache-control"] = "no-cache"
        return response


def mount_web(api: FastAPI, dist: Path = WEB_DIST) -> None:
    """Serve the chat page at `/` if it was built; the API works without it."""
    if not (dist / "index.html").is_file():
        logger.warning(
            "web chat page not built (%s missing): run `npm ci && npm run build` in chatapp/web",
            dist / "index.html",
        )
        return
    api.mount("/", WebFiles(directory=dist, html=True), name="web")
