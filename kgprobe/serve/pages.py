"""The routes of the pages and of their JSON twins under ``/api``: each calls one builder of
:mod:`kgprobe.serve.views` and renders its dict with a template, or returns it as JSON."""
from __future__ import annotations

from urllib.parse import unquote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from kgprobe.serve import views
from kgprobe.serve.harvest_view import tsv, turtle
from kgprobe.serve.paths import BadPath

router = APIRouter()


def render(request: Request, template: str, data: dict, *, api: bool) -> Response:
    if api:
        return JSONResponse(data)
    html = request.app.state.templates.get_template(template).render(request=request, **data)
    return Response(html, media_type="text/html; charset=utf-8")


def split_last(request: Request, prefix: str) -> tuple[str, str]:
    """``(run, last)`` of a URL ``PREFIX/RUN.../LAST``, split on the raw (still percent-encoded)
    path, so a ``/`` encoded as ``%2F`` in LAST (an entity's name) stays in it."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.scope["path"]
    rest = path[len(prefix):] if path.startswith(prefix) else ""
    run, sep, last = rest.rpartition("/")
    if not sep or not last:
        raise BadPath(f"expected {prefix}RUN/NAME")
    return unquote(run), unquote(last)


@router.get("/")
@router.get("/api/runs")
def runs_page(request: Request) -> Response:
    return render(request, "runs.html", views.runs_data(request.app.state),
                  api=request.url.path.startswith("/api/"))


def _harvest(request: Request, run: str, api: bool, q: str, sort: str, order: str, page: int, size: int | None,
             download: str | None) -> Response:
    data, h, rows = views.harvest_data(request.app.state, run, q=q, sort=sort, order=order, page=page, size=size)
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in h.relation) or "tuples"
    if download == "tsv":
        return Response(tsv(h, rows), media_type="text/tab-separated-values; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.tsv"'})
    if download in ("ttl", "turtle"):
        return Response(turtle(h, rows), media_type="text/turtle; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.ttl"'})
    if download is not None:
        raise BadPath(f"download must be tsv or ttl, not {download!r}")
    return render(request, "harvest.html", data, api=api)


@router.get("/harvest/{run:path}")
def harvest_page(request: Request, run: str, q: str = Query("", max_length=2000), sort: str = "rank",
                 order: str = "", page: int = Query(1, ge=1), size: int | None = Query(None, ge=1),
                 download: str | None = None) -> Response:
    return _harvest(request, run, False, q, sort, order, page, size, download)


@router.get("/api/harvest/{run:path}")
def harvest_api(request: Request, run: str, q: str = Query("", max_length=2000), sort: str = "rank",
                order: str = "", page: int = Query(1, ge=1), size: int | None = Query(None, ge=1),
                download: str | None = None) -> Response:
    return _harvest(request, run, True, q, sort, order, page, size, download)


@router.get("/entity/{rest:path}")
@router.get("/api/entity/{rest:path}")
def entity_page(request: Request, rest: str, k: int = Query(10, ge=1, le=50)) -> Response:
    api = request.url.path.startswith("/api/")
    run, entity = split_last(request, "/api/entity/" if api else "/entity/")
    return render(request, "entity.html", views.entity_data(request.app.state, run, entity, k=k), api=api)


@router.get("/predict/{run:path}")
@router.get("/api/predict/{run:path}")
def predict_page(request: Request, run: str, text: str = Query("", max_length=2000),
                 k: int = Query(5, ge=1, le=50)) -> Response:
    return render(request, "predict.html", views.predict_data(request.app.state, run, text, k=k),
                  api=request.url.path.startswith("/api/"))


@router.get("/concepts/{run:path}")
@router.get("/api/concepts/{run:path}")
def concepts_page(request: Request, run: str) -> Response:
    return render(request, "concepts.html", views.concepts_data(request.app.state, run),
                  api=request.url.path.startswith("/api/"))


@router.get("/concept/{rest:path}")
@router.get("/api/concept/{rest:path}")
def concept_page(request: Request, rest: str) -> Response:
    api = request.url.path.startswith("/api/")
    run, concept = split_last(request, "/api/concept/" if api else "/concept/")
    return render(request, "concept.html", views.concept_data(request.app.state, run, concept), api=api)


@router.get("/run/{run:path}")
@router.get("/api/run/{run:path}")
def run_page(request: Request, run: str, q: str = Query("", max_length=2000)) -> Response:
    return render(request, "run.html", views.run_data(request.app.state, run, q=q),
                  api=request.url.path.startswith("/api/"))


@router.get("/file/{run:path}")
def run_png(request: Request, run: str, name: str) -> Response:
    """A PNG plot of a run (only ``.png`` files directly in a run directory)."""
    return FileResponse(views.png_file(request.app.state, run, name), media_type="image/png")


@router.get("/query")
@router.get("/api/query")
def query_page(request: Request, query: str = Query("", max_length=100_000)) -> Response:
    from kgprobe.serve.sparql import HttpError, result_table, run_query

    state = request.app.state
    data: dict = {"query": query, "result": None, "error": None, "sparql": state.store is not None,
                  "graphs": _graphs(state)}
    if query.strip():
        try:
            if len(query) > state.limits.max_query_chars:
                raise HttpError(400, f"the query is longer than {state.limits.max_query_chars} characters")
            data["result"] = result_table(run_query(state, query))
        except HttpError as err:
            data["error"] = str(err)
    api = request.url.path.startswith("/api/")
    if api and data["error"]:
        return JSONResponse(data, status_code=400)
    return render(request, "query.html", data, api=api)


def _graphs(state) -> list:
    try:
        return [list(g) for g in state.store.graphs()][:100] if state.store is not None else []
    except Exception:  # the list is a convenience: a store that cannot list its graphs still queries
        return []
