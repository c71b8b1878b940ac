"""``kgprobe serve``: a local web view over run directories and a SPARQL endpoint over a store.

* :mod:`~kgprobe.serve.app` — :func:`create_app`, the FastAPI application (templates, static files,
  error pages, security headers);
* :mod:`~kgprobe.serve.limits` — :class:`Limits`, the bounds of every request;
* :mod:`~kgprobe.serve.paths` — run paths from URLs, resolved strictly under RUNS_DIR;
* :mod:`~kgprobe.serve.runs` — run discovery: each run directory's kind and key figures;
* :mod:`~kgprobe.serve.harvest_view`, :mod:`~kgprobe.serve.entity_view`,
  :mod:`~kgprobe.serve.concepts_view` — what the harvest, entity and concept pages read;
* :mod:`~kgprobe.serve.views` — the data of every page (the ``/api`` JSON);
* :mod:`~kgprobe.serve.pages`, :mod:`~kgprobe.serve.sparql` — the routes;
* :mod:`~kgprobe.serve.svg` — geometry of the drawings (histograms, the neighbourhood graph).

The web layer reads runs and renders them; the work (judging tuples, link prediction, nearest
entities, SPARQL) is the library's. FastAPI and uvicorn are imported only when the server is made.
"""
from __future__ import annotations

from kgprobe.serve.limits import Limits


def create_app(*args, **kwargs):
    """:func:`kgprobe.serve.app.create_app` (imported on call: FastAPI loads only then)."""
    from kgprobe.serve.app import create_app as make

    return make(*args, **kwargs)


__all__ = ["Limits", "create_app"]
