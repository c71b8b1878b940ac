"""The application factory of ``kgprobe serve``: the routes, the templates (Jinja2, autoescaped),
the package's static files, the error pages and the security headers."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kgprobe.errors import KgprobeError
from kgprobe.serve.cache import LoadCache
from kgprobe.serve.limits import Limits

HERE = Path(__file__).resolve().parent
#: every page and file may use only what this server sends (no CDN, no inline script)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def templates():
    """The Jinja2 environment of the pages: autoescape on for every template (data is never marked
    safe), with filters that percent-encode run paths (``runq``) and path segments (``segq``)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["runq"] = lambda s: quote(str(s), safe="/")
    env.filters["segq"] = lambda s: quote(str(s), safe="")
    env.filters["num"] = _num
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def open_store_of(store: Any, *, allow_update: bool):
    """``store`` as given (an object with ``query``), or opened from a directory or URL by
    :func:`kgprobe.kg.store.open_store`; None when none is given."""
    if store is None or hasattr(store, "query"):
        return store
    from kgprobe.kg.store import open_store

    return open_store(str(store), create=False, read_only=not allow_update)


def create_app(runs_dir: str | Path, *, store: Any = None, allow_update: bool = False,
               limits: Limits | None = None):
    """The FastAPI application over the runs under ``runs_dir`` and (``store``: a store or its
    directory / URL) a SPARQL endpoint; ``allow_update`` lets POSTed SPARQL updates through."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from kgprobe.serve import pages, sparql

    runs_dir = Path(runs_dir).resolve()
    if not runs_dir.is_dir():
        raise KgprobeError("no such runs directory", path=runs_dir)
    limits = limits or Limits()
    app = FastAPI(title="kgprobe serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs_dir = runs_dir
    app.state.limits = limits
    app.state.allow_update = bool(allow_update)
    app.state.store = open_store_of(store, allow_update=allow_update)
    # SPARQL queries run in threads, each driving a query process: a bounded number at once
    app.state.query_slots = threading.BoundedSemaphore(limits.max_concurrent_queries)
    app.state.cache = LoadCache(limits.cached_graphs)
    app.state.models = LoadCache(limits.cached_models)
    app.state.templates = templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(sparql.router)
    app.include_router(pages.router)
    _add_handlers(app)
    return app


def _add_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    from kgprobe.serve.harvest_view import BadQuery
    from kgprobe.serve.paths import BadPath, NotFound
    from kgprobe.serve.sparql import HttpError

    def status_of(err: Exception) -> int:
        if isinstance(err, HttpError):
            return err.status
        return 404 if isinstance(err, NotFound) else 400

    async def error(request, err: Exception):
        status = status_of(err) if isinstance(err, (KgprobeError,)) else 400
        message = str(err) if isinstance(err, KgprobeError) else "bad request parameters: " + "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in err.errors())
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        page = app.state.templates.get_template("error.html").render(request=request, status=status,
                                                                     message=message)
        return Response(page, status_code=status, media_type="text/html; charset=utf-8")

    for kind in (KgprobeError, BadPath, NotFound, BadQuery, HttpError, RequestValidationError):
        app.add_exception_handler(kind, error)

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
