"""The dashboard: one page and its static assets (public: they hold no data), and who the caller's key is.

The page signs in with an API key and calls the same routes as any client, with the key in X-API-Key; the
server enforces every role, the page only hides what the role may not do. Assets are shipped in the package
(serve/ui), so the dashboard needs no CDN, internet or Node build.
"""
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from edgeray.auth import PERMISSIONS
from serve.deps import require, responses

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
STATIC_PATH = "/ui/static"
# Everything the page loads comes from this origin; no inline script or style, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

router = APIRouter(tags=["ui"])


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                                        "X-Content-Type-Options": "nosniff"})


@router.get("/api/whoami", responses=responses(401, 403, 503))
async def whoami(who=require("read")) -> dict:
    """The caller's name, role and permissions: the dashboard's sign-in (a feed key, which reads nothing, gets 403)."""
    return {"name": who.name, "role": who.role, "permissions": sorted(PERMISSIONS[who.role])}


def static_files() -> StaticFiles:
    """Mounted by create_app at STATIC_PATH (a router cannot carry a mount)."""
    return StaticFiles(directory=UI_DIR / "static")
