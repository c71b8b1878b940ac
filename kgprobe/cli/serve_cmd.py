"""``kgprobe serve``: a local web view over run directories and a SPARQL endpoint
(:func:`kgprobe.serve.create_app`, run by uvicorn). FastAPI and uvicorn load only in the command."""
from __future__ import annotations

from pathlib import Path

import click

from kgprobe.errors import KgprobeError


@click.command()
@click.argument("runs_dir", metavar="[RUNS_DIR]", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", default=None, metavar="DIR_OR_URL",
              help="RDF store to answer SPARQL from (a store directory, or a SPARQL endpoint URL, as "
                   "kgprobe.kg.store.open_store takes it); without it /sparql answers 503.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free one, printed at start).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is this machine only; anything else exposes the runs "
                   "and the store, without authentication, to whoever can reach it.")
@click.option("--allow-update", is_flag=True,
              help="Let SPARQL updates (POST update= or application/sparql-update) change the store; "
                   "without it they are refused with HTTP 400 and the store is opened read-only.")
@click.option("--query-timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              help="Seconds a SPARQL query may run.")
@click.option("--max-rows", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True,
              help="Rows a SPARQL result may have (a longer one is cut and says so).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="warning",
              show_default=True, help="uvicorn's log level ('info' logs every request).")
def serve(runs_dir: Path, store: str | None, port: int, host: str, allow_update: bool, query_timeout: float,
          max_rows: int, log_level: str) -> None:
    """Serve a local web view over the runs under RUNS_DIR (default: the current directory).

    \b
    Pages (each also as JSON under /api/...):
      /                        every run directory (found by its .kgprobe marker, at most 4 levels
                               down) with its kind and key figures
      /harvest/RUN             ranked tuples, scores per prompt, prompt weights, precision against
                               the reference with wrong tuples marked (when judged: eval.json), a
                               score histogram; ?q= filters, ?sort=&order= sorts, ?page=&size= pages
                               (size <= 500), ?download=tsv|ttl downloads
      /entity/RUN/ENTITY       facts in and out, a neighbourhood graph, the nearest entities of the
                               embedding runs (`kgprobe embed`) and the answers of the trained
                               link-prediction runs (`kgprobe linkpred train`) under RUNS_DIR
      /predict/RUN?text=       links a trained link-prediction run predicts for a new entity's text
      /concepts/RUN            concept vectors (`kgprobe probe`): top tokens, null tests,
                               validation, unlearning, the run's plots; /concept/RUN/CONCEPT for one
      /run/RUN                 any run: figures, record files, plots, a KG's entities
      /query                   a SPARQL form over --store; /sparql is the SPARQL 1.1 Protocol
                               endpoint (GET ?query=, POST form or application/sparql-query; JSON,
                               or CSV / TSV by Accept or ?format=)

    \b
    Safety: listens on 127.0.0.1 unless --host; run paths in URLs must lie under RUNS_DIR (no '..',
    no absolute paths, no symlinks leading out: 400 / 404); every text from a run is HTML-escaped;
    SPARQL is read-only unless --allow-update, with a time and a row limit; pages show at most 500 rows.

    \b
    Example:
      kgprobe serve runs/ --port 8000        # then open http://127.0.0.1:8000/
    """
    import uvicorn

    from kgprobe.serve import Limits, create_app

    if not runs_dir.is_dir():
        raise KgprobeError("no such runs directory", path=runs_dir)
    limits = Limits(query_timeout_s=query_timeout, max_result_rows=max_rows)
    app = create_app(runs_dir, store=store, allow_update=allow_update, limits=limits)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                            server_header=False)
    server = uvicorn.Server(config)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"kgprobe: warning: listening on {host}: anyone who can reach it reads the runs"
                   + (" and can change the store" if allow_update else ""), err=True)
    _announce(server, runs_dir, host)
    server.run()


def _announce(server, runs_dir: Path, host: str) -> None:
    """Print the address once uvicorn is listening (with --port 0, the port it got)."""
    startup = server.startup

    async def announced(sockets=None):
        await startup(sockets=sockets)
        for s in getattr(server, "servers", []) or []:
            for sock in s.sockets:
                addr = sock.getsockname()
                shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                click.echo(f"kgprobe serve: {runs_dir.resolve()} at http://{shown}:{addr[1]}/ (Ctrl+C stops)")
                return

    server.startup = announced
