"""The SPARQL store (kgprobe.kg.store): loads, queries, result formats, interruption, endpoints, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from kgprobe.cli import cli
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats import save_kg
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.store import BOOKKEEPING_GRAPH, open_store

KGP = "https://kgprobe.org/kg/schema#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# Every reified triple with its score and provenance, in a stable order.
SCORED = f"""PREFIX kgp: <{KGP}> PREFIX rdf: <{RDF}>
SELECT ?h ?r ?t ?score ?prov WHERE {{
  ?st a rdf:Statement ; rdf:subject ?h ; rdf:predicate ?r ; rdf:object ?t ; kgp:index ?i ;
      kgp:score ?score ; kgp:provenance ?prov .
}} ORDER BY ?i"""
# One graph's statements (a query over the union sees every loaded KG's).
def scoped(sparql: str, name: str) -> str:
    return sparql.replace("WHERE {", f"WHERE {{ GRAPH <https://kgprobe.org/kg/graph/{name}> {{").replace(
        "} ORDER", "} } ORDER")


ENTITY_GRAPHS = f"""SELECT ?g (COUNT(?e) AS ?n) WHERE {{ GRAPH ?g {{ ?e a <{KGP}Entity> }} }} GROUP BY ?g ORDER BY ?g"""


def capitals() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples(
        [("Paris", "capital_of", "France"), ("Berlin", "capital_of", "Germany"), ("Rome", "capital_of", "Italy"),
         ("Paris", "capital_of", "France")],  # repeated: one plain triple, two statements
        scores=[0.9, 0.8, 0.7, 0.5], provenance=["lm", "lm", "wiki", "lm"], name="capitals",
    )


def harvest_run(folder: Path) -> Path:
    """A harvest run directory as ``kgprobe harvest --out`` leaves it: kg.ttl among other files."""
    folder.mkdir()
    (folder / "tuples.jsonl").write_text("{}\n")
    (folder / "config.json").write_text("{}")
    kg = KnowledgeGraph.from_labeled_triples(
        [("Danube", "flows_through", "Austria"), ("Rhine", "flows_through", "Germany")],
        scores=[0.6, 0.4], provenance=["kgprobe-harvest:tiny", "kgprobe-harvest:tiny"], name="flows_through")
    save_kg(kg, folder / "kg.ttl")
    return folder


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    """A store with two graphs: an in-memory KG and a harvest run directory."""
    tmp = tmp_path_factory.mktemp("store")
    run = harvest_run(tmp / "run_rivers")
    with open_store(tmp / "kgstore", create=True, read_only=False) as store:
        first = store.load(capitals())
        second = store.load(run)
    assert first.graph == "https://kgprobe.org/kg/graph/capitals" and first.triples > 0
    assert second.graph == "https://kgprobe.org/kg/graph/run_rivers"
    return tmp / "kgstore"


def test_named_graph_per_load_and_counts(loaded):
    with open_store(loaded) as store:
        graphs = dict(store.graphs())
    assert set(graphs) == {"https://kgprobe.org/kg/graph/capitals", "https://kgprobe.org/kg/graph/run_rivers"}
    assert BOOKKEEPING_GRAPH not in graphs
    # capitals: 6 graph facts, 1 relation x 3, 6 entities x 3, 3 distinct plain triples, 4 statements x 7
    assert graphs["https://kgprobe.org/kg/graph/capitals"] == 6 + 3 + 18 + 3 + 28


def test_reified_scores_are_queryable(loaded):
    with open_store(loaded) as store:
        result = store.query(scoped(SCORED, "capitals"))
    assert result.kind == "select" and result.variables == ("h", "r", "t", "score", "prov")
    assert [(v[0].rsplit("/", 1)[1], v[3], v[4]) for v in result.values()] == [
        ("Paris", "0.9", "lm"), ("Berlin", "0.8", "lm"), ("Rome", "0.7", "wiki"), ("Paris", "0.5", "lm")]
    assert result.rows[0][0] == "<https://kgprobe.org/kg/entity/Paris>"  # rows: N-Triples text
    assert result.rows[0][3] == '"0.9"^^<http://www.w3.org/2001/XMLSchema#double>'


def test_default_graph_is_the_union_and_graph_names_them(loaded):
    with open_store(loaded) as store:
        everything = store.query(f"SELECT (COUNT(*) AS ?n) WHERE {{ ?e a <{KGP}Entity> }}")
        per_graph = store.query(ENTITY_GRAPHS)
        bookkeeping = store.query(f"ASK {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ ?s ?p ?o }} }}")
    # 6 capitals entities + 4 river entities: Germany, in both graphs, is matched once per graph
    # (oxigraph's union of graphs is one of quads, not an RDF merge; CONSTRUCT output is a set)
    assert everything.values() == [("10",)]
    assert per_graph.values() == [("https://kgprobe.org/kg/graph/capitals", "6"),
                                  ("https://kgprobe.org/kg/graph/run_rivers", "4")]
    assert bookkeeping.boolean is False  # hidden from queries


def test_statements_of_two_kgs_stay_apart_in_the_union(loaded):
    """In the store a KG's reified statements are <graph>/triple/<i> (the file's <base>triple/<i>
    would be shared by every KG written with the default base, joining their scores)."""
    union = SCORED.replace("SELECT ?h", "SELECT ?st ?h")
    with open_store(loaded) as store:
        rows = store.query(union).values()
    assert len(rows) == 4 + 2
    assert sorted(r[0] for r in rows if r[5] == "lm")[0] == "https://kgprobe.org/kg/graph/capitals/triple/0"
    assert {r[0].rsplit("/triple/", 1)[0] for r in rows} == {
        "https://kgprobe.org/kg/graph/capitals", "https://kgprobe.org/kg/graph/run_rivers"}


def _rdflib_values(ttl: Path, sparql: str) -> list[tuple]:
    from rdflib import Graph

    return [tuple(None if v is None else str(v) for v in row) for row in Graph().parse(ttl).query(sparql)]


def test_same_rows_through_api_cli_and_rdflib(loaded, tmp_path):
    """(a) store.query, (b) kgprobe kg query --format json, (c) rdflib over kgprobe kg convert's Turtle."""
    save_kg(capitals(), tmp_path / "capitals.jsonl")
    runner = CliRunner()
    converted = runner.invoke(cli, ["kg", "convert", str(tmp_path / "capitals.jsonl"), str(tmp_path / "c.ttl")])
    assert converted.exit_code == 0, converted.output
    with open_store(loaded) as store:
        api = store.query(scoped(SCORED, "capitals")).values()
    out = runner.invoke(cli, ["kg", "query", str(loaded), scoped(SCORED, "capitals"), "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    cli_rows = [tuple(b[v]["value"] for v in doc["head"]["vars"]) for b in doc["results"]["bindings"]]
    assert api == cli_rows == _rdflib_values(tmp_path / "c.ttl", SCORED)
    assert len(api) == 4


def test_result_formats(loaded):
    with open_store(loaded) as store:
        result = store.query(f"SELECT ?e ?label WHERE {{ ?e a <{KGP}Relation> ; "
                             f"<http://www.w3.org/2000/01/rdf-schema#label> ?label }} ORDER BY ?e")
        ask = store.query("ASK { ?s ?p ?o }")
        graph = store.query(f"CONSTRUCT {{ ?e a <{KGP}Entity> }} WHERE {{ ?e a <{KGP}Entity> }}")
    assert result.serialize("csv") == (b"e,label\r\nhttps://kgprobe.org/kg/relation/capital_of,capital_of\r\n"
                                       b"https://kgprobe.org/kg/relation/flows_through,flows_through\r\n")
    assert result.serialize("tsv").splitlines()[1] == b'<https://kgprobe.org/kg/relation/capital_of>\t"capital_of"'
    assert json.loads(result.serialize("json"))["head"]["vars"] == ["e", "label"]
    assert result.media_type("json") == "application/sparql-results+json"
    assert result.serialize("table").decode().splitlines()[-1] == "(2 rows)"
    assert ask.kind == "ask" and ask.boolean is True and json.loads(ask.serialize("json"))["boolean"] is True
    assert graph.kind == "graph" and len(graph.rows) == 9  # Germany once
    assert graph.serialize("ntriples").count(b"\n") == 9 and b"@prefix kgp:" in graph.serialize("turtle")
    with pytest.raises(KgprobeError, match="cannot be written as json"):
        graph.serialize("json")


def test_truncation(loaded):
    with open_store(loaded) as store:
        cut = store.query("SELECT ?s WHERE { ?s ?p ?o }", max_rows=3)
        whole = store.query(ENTITY_GRAPHS, max_rows=2)
        graph = store.query("CONSTRUCT WHERE { ?s ?p ?o }", max_rows=5)
    assert len(cut.rows) == 3 and cut.truncated
    assert "more were cut" in cut.serialize("table").decode()
    assert len(whole.rows) == 2 and not whole.truncated
    assert len(graph.rows) == 5 and graph.truncated


def test_timeout_stops_a_runaway_query(loaded):
    with open_store(loaded) as store, pytest.raises(KgprobeError, match="time limit of 0.5 s"):
        store.query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l . ?m ?n2 ?o }",
                    timeout_s=0.5)


def test_updates_refused_and_syntax_errors(loaded, tmp_path):
    with open_store(loaded) as store:
        with pytest.raises(KgprobeError, match="SPARQL update; updates are refused"):
            store.query("DELETE WHERE { ?s ?p ?o }")
        with pytest.raises(KgprobeError, match="SPARQL syntax error: error at 1:"):
            store.query("SELECT ?x WHERE {")
        with pytest.raises(KgprobeError, match="read-only"):
            store.load(capitals())
    with open_store(tmp_path / "w", create=True, read_only=False) as store:
        store.load(capitals())
        done = store.query("INSERT DATA { GRAPH <urn:x:g> { <urn:x:a> <urn:x:b> <urn:x:c> } }", allow_update=True)
        assert done.kind == "update"
        assert dict(store.graphs())["urn:x:g"] == 1


def test_loading_a_graph_again_replaces_it(tmp_path):
    with open_store(tmp_path / "s", create=True, read_only=False) as store:
        first = store.load(capitals())
        again = store.load(capitals())
        other = store.load(capitals(), graph="urn:kg:second")
        assert (first.replaced, again.replaced, other.replaced) == (False, True, False)
        assert first.triples == again.triples == other.triples
        assert store.graphs() == [("https://kgprobe.org/kg/graph/capitals", first.triples),
                                  ("urn:kg:second", first.triples)]


def big_kg(n: int = 5_000) -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples([(f"e{i}", f"r{i % 7}", f"e{(i * 31) % n}") for i in range(n)],
                                               scores=[i / n for i in range(n)], name="big")


KILL_MIDWAY = """
import os, signal, sys
from kgprobe.kg import store_local
from kgprobe.kg.store import open_store
sys.path.insert(0, {tests!r})
from test_store import big_kg

real = store_local.ntriples_chunks
def chunks(kg, *, base, graph):
    for i, chunk in enumerate(real(kg, base=base, graph=graph)):
        if i == 7_000:  # (1 graph + 7 relations + 5000 entities) blocks in: amid the plain triples
            os.kill(os.getpid(), signal.SIGKILL)
        yield chunk
store_local.ntriples_chunks = chunks
with open_store({store!r}, create=True, read_only=False) as store:
    store.load(big_kg())
"""


def test_an_interrupted_load_is_hidden_then_cleared(tmp_path, monkeypatch):
    from kgprobe.kg import store_local

    real = store_local.ntriples_chunks

    def interrupted(kg, *, base, graph):
        for i, chunk in enumerate(real(kg, base=base, graph=graph)):
            if i == 10:
                raise KeyboardInterrupt
            yield chunk

    with open_store(tmp_path / "s", create=True, read_only=False) as store:
        complete = store.load(capitals()).triples
        monkeypatch.setattr(store_local, "ntriples_chunks", interrupted)
        with pytest.raises(KeyboardInterrupt):
            store.load(capitals(), graph="urn:kg:half")
        assert store.graphs() == [("https://kgprobe.org/kg/graph/capitals", complete)]
    monkeypatch.setattr(store_local, "ntriples_chunks", real)
    with open_store(tmp_path / "s", read_only=False) as store:
        assert store.query("ASK { GRAPH <urn:kg:half> { ?s ?p ?o } }").boolean is False
        assert store.load(capitals(), graph="urn:kg:half").triples == complete


@pytest.mark.slow
def test_a_killed_load_never_looks_complete(tmp_path):
    with open_store(tmp_path / "reference", create=True, read_only=False) as store:
        reference = store.load(big_kg()).triples
        store.load(capitals())
    target = tmp_path / "killed"
    with open_store(target, create=True, read_only=False) as store:
        kept = store.load(capitals()).triples
    script = KILL_MIDWAY.format(tests=str(Path(__file__).parent), store=str(target))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()
    with open_store(target) as store:  # read-only: the half graph is hidden, the earlier one intact
        assert store.graphs() == [("https://kgprobe.org/kg/graph/capitals", kept)]
        assert store.query(f"ASK {{ <{'https://kgprobe.org/kg/entity/e1'}> ?p ?o }}").boolean is False
    with open_store(target, read_only=False) as store:  # writable: the half graph is deleted
        assert store.query("SELECT ?g WHERE { GRAPH ?g {} }").rows == [("<https://kgprobe.org/kg/graph/capitals>",)]
        again = store.load(big_kg())
        assert again.triples == reference and not again.replaced
        assert dict(store.graphs())["https://kgprobe.org/kg/graph/big"] == reference


# --------------------------------------------------------------------------- a SPARQL endpoint
class _Endpoint(BaseHTTPRequestHandler):
    """A minimal SPARQL 1.1 Protocol server over an in-memory pyoxigraph store (tests only)."""

    store = None

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._answer(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [""])[0], None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
        kind = self.headers.get_content_type()
        if kind == "application/sparql-update":
            self._answer(None, body)
        else:
            form = urllib.parse.parse_qs(body)
            self._answer(form.get("query", [None])[0], form.get("update", [None])[0])

    def _answer(self, query: str | None, update: str | None) -> None:
        import pyoxigraph

        try:
            if update is not None:
                self.store.update(update)
                return self._send(204, "text/plain", b"")
            result = self.store.query(query, use_default_graph_as_union=True)
        except SyntaxError as err:
            return self._send(400, "text/plain", str(err).encode())
        if isinstance(result, pyoxigraph.QueryTriples):
            return self._send(200, "application/n-triples", result.serialize(format=pyoxigraph.RdfFormat.N_TRIPLES))
        data = result.serialize(format=pyoxigraph.QueryResultsFormat.JSON)
        return self._send(200, "application/sparql-results+json", data)

    def _send(self, code: int, media: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint():
    import pyoxigraph

    handler = type("Handler", (_Endpoint,), {"store": pyoxigraph.Store()})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sparql"
    server.shutdown()
    server.server_close()


def test_remote_endpoint_round_trip(endpoint, loaded, tmp_path):
    with open_store(endpoint, read_only=False) as remote:
        report = remote.load(capitals())
        remote.load(harvest_run(tmp_path / "run_rivers"))
        assert remote.load(capitals()).replaced
        with open_store(loaded) as local:
            assert remote.graphs() == local.graphs()
            assert report.triples == dict(local.graphs())[report.graph]
            everything = (f"SELECT * WHERE {{ GRAPH ?g {{ ?s ?p ?o }} FILTER(?g != <{BOOKKEEPING_GRAPH}>) }} "
                          f"ORDER BY ?g ?s ?p ?o")
            for sparql in (scoped(SCORED, "capitals"), ENTITY_GRAPHS, everything):
                there, here = remote.query(sparql, max_rows=20), local.query(sparql, max_rows=20)
                assert (there.variables, there.rows, there.truncated) == (here.variables, here.rows, here.truncated)
            assert remote.query("ASK { ?s ?p ?o }").boolean is True
            construct = f"CONSTRUCT WHERE {{ ?e a <{KGP}Entity> }}"
            assert sorted(remote.query(construct).rows) == sorted(local.query(construct).rows)
        with pytest.raises(KgprobeError, match="updates are refused"):
            remote.query("DROP ALL")
        with pytest.raises(KgprobeError, match="answered 400"):
            remote.query("SELECT ?x WHERE {")
    out = CliRunner().invoke(cli, ["kg", "graphs", endpoint])
    assert out.exit_code == 0 and "https://kgprobe.org/kg/graph/capitals\t" in out.output


# --------------------------------------------------------------------------- CLI
def test_cli_load_query_graphs(tmp_path):
    save_kg(capitals(), tmp_path / "capitals.ttl")
    runner = CliRunner()
    out = runner.invoke(cli, ["kg", "load", str(tmp_path / "capitals.ttl"), "--store", str(tmp_path / "s"), "--quiet"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("loaded graph <https://kgprobe.org/kg/graph/capitals>: 58 triples from ")
    (tmp_path / "q.rq").write_text(f"SELECT ?e WHERE {{ ?e a <{KGP}Entity> }} ORDER BY ?e")
    table = runner.invoke(cli, ["kg", "query", str(tmp_path / "s"), "--file", str(tmp_path / "q.rq"), "--limit", "2"])
    assert table.exit_code == 0, table.output
    assert table.output.splitlines() == [
        "e", "-" * 38, "<https://kgprobe.org/kg/entity/Berlin>", "<https://kgprobe.org/kg/entity/France>",
        "(2 rows; more were cut at the row limit)"]
    tsv = runner.invoke(cli, ["kg", "query", str(tmp_path / "s"), "--file", str(tmp_path / "q.rq"), "--format", "tsv"])
    assert tsv.output.splitlines()[:2] == ["?e", "<https://kgprobe.org/kg/entity/Berlin>"]
    listed = runner.invoke(cli, ["kg", "graphs", str(tmp_path / "s")])
    assert listed.output == "https://kgprobe.org/kg/graph/capitals\t58\n"


@pytest.mark.slow
def test_wordnet(tmp_path):
    from kgprobe.kg.datasets import build_dataset

    kg = build_dataset("wordnet")
    with open_store(tmp_path / "wn", create=True, read_only=False) as store:
        report = store.load(kg)
    with open_store(tmp_path / "wn") as store:
        per_relation = store.query(f"""PREFIX rdf: <{RDF}> SELECT ?r (COUNT(*) AS ?n)
            WHERE {{ ?st a rdf:Statement ; rdf:predicate ?r }} GROUP BY ?r ORDER BY DESC(?n)""")
    assert report.graph == "https://kgprobe.org/kg/graph/wordnet"
    assert sum(int(n) for _, n in per_relation.values()) == kg.num_triples


@pytest.mark.parametrize("sparql, message", [
    ("SELECT ?x WHERE {", "kgprobe: error: SPARQL syntax error: error at 1:18: expected one of"),
    ("DELETE WHERE { ?s ?p ?o }", "kgprobe: error: this is a SPARQL update; updates are refused here"),
])
def test_cli_bad_query_is_one_line_exit_2(loaded, sparql, message, capsys):
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["kg", "query", str(loaded), sparql])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1
