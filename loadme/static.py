"""The dashboard's static files, shipped in the app (`loadme/dashboard/`) and served by the app itself.

Only files in that folder, by an exact relative path; the folder's `index.html` for the bare path.
The page holds no data: it asks for the function key and calls the API with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json",
}
# The page's own policy: its scripts and styles only, and the API on the same origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def dashboard_file(path: str, root: Path = DASHBOARD_DIR) -> StaticFile | None:
    """The file at `path` under the dashboard folder (its index for ""), or None: unknown, a folder,
    an unsupported type, or anything that would leave the folder."""
    relative = path.strip("/") or "index.html"
    try:
        target = (root / relative).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            return None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such file
        return None
    content_type = CONTENT_TYPES.get(target.suffix.lower())
    if content_type is None:
        return None
    return StaticFile(target.read_bytes(), content_type)
