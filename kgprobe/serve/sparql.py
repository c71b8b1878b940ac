"""The SPARQL 1.1 Protocol endpoint (``/sparql``) and the query page (``/query``) over the store.

Queries go by GET ``?query=``, POST form ``query=`` or POST ``application/sparql-query``; updates
(POST form ``update=``, ``application/sparql-update``, or an update sent as a query) are refused
with HTTP 400 unless the server runs with ``--allow-update``. Results are
``application/sparql-results+json`` unless the Accept header or ``format=`` asks for CSV or TSV
(graph results: Turtle or N-Triples). Each query has a time limit and a row limit
(:class:`~kgprobe.serve.limits.Limits`); a cut result says so in the ``X-Kgprobe-Truncated`` header.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kgprobe.errors import KgprobeError

router = APIRouter()

SELECT_FORMATS = ("json", "csv", "tsv")
GRAPH_FORMATS = ("turtle", "ntriples")
ACCEPT = {"application/sparql-results+json": "json", "application/json": "json", "text/csv": "csv",
          "text/tab-separated-values": "tsv", "text/turtle": "turtle", "application/n-triples": "ntriples",
          "text/plain": "ntriples"}


class HttpError(KgprobeError):
    """An error answered with its HTTP status and one line of text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def choose_format(kind: str, asked: str | None, accept: str) -> str:
    """The serialisation of a result of ``kind``: ``asked`` (``format=``), else the first acceptable
    type of the Accept header that suits the kind, else JSON (graph results: Turtle)."""
    allowed = GRAPH_FORMATS if kind == "graph" else SELECT_FORMATS
    if asked:
        if asked not in allowed:
            raise HttpError(400, f"format {asked!r} does not suit a {kind} result; choose {', '.join(allowed)}")
        return asked
    for part in accept.split(","):
        fmt = ACCEPT.get(part.split(";")[0].strip().lower())
        if fmt in allowed:
            return fmt
    return allowed[0]


async def read_request(request: Request) -> tuple[str, bool]:
    """``(text, is_update)`` of a protocol request, checked against the size limit."""
    limits = request.app.state.limits
    if request.method == "GET":
        text, update = request.query_params.get("query"), False
        if text is None and request.query_params.get("update") is not None:
            raise HttpError(400, "updates are sent by POST")
    else:
        body = await _body(request, 4 * limits.max_query_chars + 1024)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/sparql-query":
            text, update = body.decode("utf-8", errors="replace"), False
        elif ctype == "application/sparql-update":
            text, update = body.decode("utf-8", errors="replace"), True
        elif ctype == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            update = "update" in form and "query" not in form
            text = (form.get("update") if update else form.get("query") or [None])[0]
        else:
            raise HttpError(415, "send application/sparql-query, application/sparql-update or a form with query=")
    if not text or not text.strip():
        raise HttpError(400, "no query: pass query=")
    if len(text) > limits.max_query_chars:
        raise HttpError(400, f"the query is longer than {limits.max_query_chars} characters")
    return text, update


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def run_query(app_state, text: str, *, update: bool = False, post: bool = False):
    """The store's :class:`~kgprobe.kg.store.QueryResult` of ``text`` within the limits; an update
    (or a syntax error) the store refuses is an HTTP 400. Updates run only when the server allows
    them and the request is a POST."""
    store = app_state.store
    if store is None:
        raise HttpError(503, "no SPARQL store: start the server with --store DIR_OR_URL")
    if update and not app_state.allow_update:
        raise HttpError(400, "updates are refused: this server is read-only (start it with --allow-update)")
    limits = app_state.limits
    slots = app_state.query_slots
    if not slots.acquire(timeout=limits.query_timeout_s):
        raise HttpError(503, f"the server is busy: {limits.max_concurrent_queries} queries running and this one "
                             f"waited {limits.query_timeout_s:g} s for a slot; try again")
    try:
        return store.query(text, timeout_s=limits.query_timeout_s, max_rows=limits.max_result_rows,
                           allow_update=app_state.allow_update and post)
    except KgprobeError as err:
        raise HttpError(400, str(err)) from None
    finally:
        slots.release()



@router.api_route("/sparql", methods=["GET", "POST"])
async def sparql(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    try:
        text, update = await read_request(request)
        result = await run_in_threadpool(run_query, request.app.state, text, update=update,
                                          post=request.method == "POST")
        if getattr(result, "kind", None) not in ("select", "ask", "graph"):  # an update that ran
            return Response(status_code=204)
        fmt = choose_format(result.kind, request.query_params.get("format"), request.headers.get("accept", ""))
        headers = {"X-Kgprobe-Truncated": "true"} if getattr(result, "truncated", False) else {}
        return Response(result.serialize(fmt), media_type=result.media_type(fmt), headers=headers)
    except HttpError as err:
        return Response(str(err) + "\n", status_code=err.status, media_type="text/plain")


def result_table(result) -> dict:
    """A result as the query page shows it: variables and rows of strings, or a boolean, or triples."""
    if result.kind == "ask":
        return {"kind": "ask", "boolean": bool(result.boolean)}
    if result.kind == "graph":
        lines = result.serialize("ntriples").decode("utf-8", errors="replace").splitlines()
        return {"kind": "graph", "variables": ["triple"], "rows": [[line] for line in lines if line.strip()],
                "truncated": bool(result.truncated)}
    payload = json.loads(result.serialize("json"))
    variables = payload["head"].get("vars", [])
    rows = [[(b.get(v) or {}).get("value", "") for v in variables] for b in payload["results"]["bindings"]]
    return {"kind": "select", "variables": variables, "rows": rows, "truncated": bool(result.truncated)}
