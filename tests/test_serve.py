"""`kgprobe serve`: the pages and their JSON over real small runs, the SPARQL endpoint, and the
safety rules (escaping, paths kept under RUNS_DIR, bounded pages, read-only SPARQL, 127.0.0.1)."""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from kgprobe.errors import KgprobeError  # noqa: E402
from kgprobe.serve import Limits, create_app  # noqa: E402
from serve_runs import PNG, XSS, concepts_run, harvest_files, tiny_harvest  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """RUNS_DIR with a hand-written harvest (with a <script> entity and 600 tuples), a concept run,
    a KG built by `kgprobe data build`, a symlink leading out and a directory that is no run."""
    from kgprobe.cli import main

    root = tmp_path_factory.mktemp("runs")
    tuples = [["Paris", "France"], [XSS, "Evil & Co"], ["AC/DC", "Australia"]]
    tuples += [[f"City{i}", f"Country{i}"] for i in range(597)]
    harvest_files(root / "hand" / "capital", tuples)
    concepts_run(root / "cv")
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "nations", "--out", str(root / "kg_nations")])
    assert exc.value.code == 0
    outside = tmp_path_factory.mktemp("outside")
    harvest_files(outside / "secret", [["Hidden", "Run"], ["Other", "Thing"]])
    (outside / "secret" / "plot.png").write_bytes(PNG)
    (root / "escape").symlink_to(outside / "secret", target_is_directory=True)
    (root / "plain").mkdir()
    (root / "plain" / "file.txt").write_text("x")
    return root


@pytest.fixture(scope="module")
def client(runs) -> TestClient:
    return TestClient(create_app(runs))


# ----------------------------------------------------------------------------- runs page
def test_runs_page_lists_every_run_with_its_kind(client):
    data = client.get("/api/runs").json()
    kinds = {r["path"]: r["kind"] for r in data["runs"]}
    assert kinds == {"hand/capital": "harvest", "cv": "concepts", "kg_nations": "kg"}  # no symlink, no plain dir
    harvest = next(r for r in data["runs"] if r["path"] == "hand/capital")
    assert harvest["figures"]["tuples"] == 600 and harvest["figures"]["relation"] == "capital_of"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="runs"' in page.text and 'href="/harvest/hand/capital"' in page.text
    assert 'href="/concepts/cv"' in page.text and 'href="/run/kg_nations"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# ----------------------------------------------------------------------------- harvest page
def test_harvest_page_sorts_filters_pages_and_downloads(client):
    base = "/api/harvest/hand/capital"
    first = client.get(base).json()
    assert first["total"] == 600 and first["size"] == 100 and first["pages"] == 6
    assert [r["rank"] for r in first["rows"][:3]] == [1, 2, 3]
    assert first["columns"] == ["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> ."]
    assert first["prompts"][0]["weight"] == 0.6
    asc = client.get(base, params={"sort": "score", "order": "asc", "size": 5}).json()
    assert [r["rank"] for r in asc["rows"]] == [600, 599, 598, 597, 596]
    by_name = client.get(base, params={"sort": "e0", "size": 600}).json()["rows"]
    names = [r["entities"][0].casefold() for r in by_name]
    assert names == sorted(names)
    found = client.get(base, params={"q": "city59"}).json()
    assert found["matched"] == 8 and all("city59" in r["entities"][0].casefold() for r in found["rows"])
    assert client.get(base, params={"size": 100000}).json()["size"] == 500  # bounded
    assert len(client.get(base, params={"size": 100000}).json()["rows"]) == 500
    assert client.get(base, params={"page": 2, "size": 500}).json()["rows"][0]["rank"] == 501
    assert client.get(base, params={"sort": "nope"}).status_code == 400
    assert client.get(base, params={"size": 0}).status_code == 400
    html = client.get("/harvest/hand/capital", params={"q": "Paris"}).text
    assert 'id="tuples"' in html and 'id="filter"' in html and 'data-sort="score"' in html
    assert 'id="histogram"' in html and "<rect" in html
    tsv = client.get("/harvest/hand/capital", params={"q": "city1", "sort": "score", "download": "tsv"})
    assert tsv.headers["content-type"].startswith("text/tab-separated-values")
    rows = list(csv.reader(io.StringIO(tsv.text), delimiter="\t"))
    assert rows[0] == ["rank", "entity_0", "entity_1", "score", "judge"] and len(rows) == 1 + 111
    ttl = client.get("/harvest/hand/capital", params={"q": "Paris", "download": "ttl"})
    assert ttl.status_code == 200 and ttl.headers["content-type"].startswith("text/turtle")
    from rdflib import Graph

    assert len(Graph().parse(data=ttl.text, format="turtle")) > 0


def test_tuples_are_marked_by_the_reference_of_eval_json(tmp_path):
    """A run judged with `kgprobe harvest-eval` (eval.json against a KG file) gets each tuple marked."""
    from kgprobe.harvest.evaluate import evaluate_run

    run = harvest_files(tmp_path / "runs" / "judged", [["Paris", "France"], ["Lyon", "France"], ["Rome", "Italy"]])
    ref = tmp_path / "ref.tsv"
    ref.write_text("Paris\tcapital\tFrance\nRome\tcapital\tItaly\n")
    evaluate_run(run, f"{ref}:capital")
    rows = TestClient(create_app(tmp_path / "runs")).get("/api/harvest/judged").json()["rows"]
    assert [r["judge"] for r in rows] == ["correct", "wrong", "correct"]
    html = TestClient(create_app(tmp_path / "runs")).get("/harvest/judged").text
    assert html.count('data-judge="wrong"') == 1 and 'id="eval"' in html


# ----------------------------------------------------------------------------- escaping
def test_a_script_entity_renders_as_text(client):
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for url in ("/harvest/hand/capital?q=alert", "/harvest/hand/capital",
                "/entity/hand/capital/" + quote(XSS, safe=""), "/concept/cv/country:france", "/concepts/cv"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert XSS not in page.text and escaped in page.text, url
    page = client.get("/harvest/hand/capital", params={"q": "alert"}).text
    # the entity's link carries it percent-encoded
    assert 'href="/entity/hand/capital/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"' in page
    assert "Evil &amp; Co" in page
    # JSON keeps the string as it is (JSON is not HTML)
    rows = client.get("/api/harvest/hand/capital", params={"q": "alert"}).json()["rows"]
    assert rows[0]["entities"][0] == XSS


def test_entity_links_percent_encode_a_slash(client):
    page = client.get("/harvest/hand/capital", params={"q": "AC/DC"}).text
    assert 'href="/entity/hand/capital/AC%2FDC"' in page
    data = client.get("/api/entity/hand/capital/AC%2FDC").json()
    assert data["entity"] == "AC/DC" and data["facts"]["out"][0]["tail"] == "Australia"
    assert client.get("/api/entity/hand/capital/Nobody").status_code == 404


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize("url", ["/harvest/..%2F..%2Fetc", "/api/harvest/..%2F..%2Fetc", "/harvest/%2Fetc",
                                 "/run/..%2F..", "/concepts/..%2Fcv", "/entity/..%2F..%2Fetc/passwd",
                                 "/harvest/escape", "/run/escape", "/file/escape?name=plot.png",
                                 "/file/cv?name=..%2F..%2Fx.png", "/file/cv?name=notes.txt", "/file/cv?name=.kgprobe",
                                 "/harvest/hand%5C..%5C..", "/harvest/hand/capital/..%2F..%2F..%2Fetc"])
def test_paths_outside_the_runs_directory_are_refused(client, url):
    response = client.get(url)
    assert response.status_code == 400, (url, response.status_code, response.text[:200])
    assert "Hidden" not in response.text


def test_missing_runs_and_files_are_404(client):
    assert client.get("/harvest/nope").status_code == 404
    assert client.get("/harvest/cv").status_code == 404  # a run, but not a harvest
    assert client.get("/api/harvest/nope").json()["status"] == 404
    assert client.get("/file/cv?name=absent.png").status_code == 404
    assert client.get("/concept/cv/country:nowhere").status_code == 404


# ----------------------------------------------------------------------------- concepts, KG runs
def test_concept_pages_show_tokens_null_tests_unlearning_and_plots(client):
    data = client.get("/api/concepts/cv").json()
    assert data["concepts"][0]["concept"] == "country:france" and data["concepts"][0]["null_p"] == {"single": 0.01}
    assert data["plots"] == ["null.png"] and data["unlearning_summary"]["npo"]["forget_acc_drop"] == 0.5
    page = client.get("/concepts/cv").text
    assert 'id="concepts"' in page and 'src="/file/cv?name=null.png"' in page
    png = client.get("/file/cv?name=null.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content == PNG
    one = client.get("/api/concept/cv/country:france").json()
    assert one["name"] == "France" and one["null_tests"][0]["histogram"]["marker"] is not None
    assert one["unlearning"][0]["forget_acc_after"] == 0.5
    assert 'id="null-single"' in client.get("/concept/cv/country:france").text


def test_kg_run_entity_page_has_facts_and_a_graph(client):
    data = client.get("/api/entity/kg_nations/usa").json()
    assert data["facts"]["out_total"] > 0 and data["facts"]["in_total"] > 0
    assert data["graph"]["shown"] > 0 and data["nearest"] == [] and data["predictions"] == []
    page = client.get("/entity/kg_nations/usa").text
    assert 'id="graph"' in page and 'id="facts-out"' in page and 'class="entity-link' in page
    listing = client.get("/api/run/kg_nations", params={"q": "chi"}).json()
    assert [e["id"] for e in listing["entities"]] == ["china"]


# ----------------------------------------------------------------------------- SPARQL (a store of the API)
class FakeResult:
    def __init__(self, kind, variables=(), rows=(), boolean=None, truncated=False):
        self.kind, self.variables, self.rows = kind, list(variables), [list(r) for r in rows]
        self.boolean, self.truncated = boolean, truncated

    def serialize(self, fmt):
        if fmt == "json":
            if self.kind == "ask":
                return json.dumps({"head": {}, "boolean": self.boolean}).encode()
            return json.dumps({"head": {"vars": self.variables}, "results": {"bindings": [
                {v: {"type": "literal", "value": x} for v, x in zip(self.variables, r)} for r in self.rows]}}).encode()
        sep = "," if fmt == "csv" else "\t"
        return ("\n".join([sep.join(self.variables)] + [sep.join(r) for r in self.rows]) + "\n").encode()

    def media_type(self, fmt):
        return {"json": "application/sparql-results+json", "csv": "text/csv", "tsv": "text/tab-separated-values",
                "turtle": "text/turtle", "ntriples": "application/n-triples"}[fmt]


class FakeStore:
    """kgprobe.kg.store's API: refuses updates unless allowed; records what it was asked."""

    def __init__(self):
        self.calls = []

    def graphs(self):
        return [("urn:g", 2)]

    def query(self, sparql, *, timeout_s=30.0, max_rows=10_000, allow_update=False):
        self.calls.append((sparql, timeout_s, max_rows, allow_update))
        if "INSERT" in sparql.upper():
            if not allow_update:
                raise KgprobeError("update queries are refused (read-only)")
            return None
        if "SYNTAX" in sparql:
            raise KgprobeError("syntax error at line 1")
        if sparql.strip().upper().startswith("ASK"):
            return FakeResult("ask", boolean=True)
        return FakeResult("select", ["s", "o"], [["a", XSS], ["b", "c"]])


def test_sparql_protocol_get_post_formats_and_limits(runs):
    store = FakeStore()
    client = TestClient(create_app(runs, store=store, limits=Limits(query_timeout_s=5.0, max_result_rows=7)))
    q = "SELECT ?s ?o WHERE { ?s ?p ?o }"
    got = client.get("/sparql", params={"query": q})
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/sparql-results+json")
    assert [b["o"]["value"] for b in got.json()["results"]["bindings"]] == [XSS, "c"]
    assert store.calls[-1] == (q, 5.0, 7, False)
    form = client.post("/sparql", data={"query": q})
    assert form.status_code == 200 and form.json() == got.json()
    body = client.post("/sparql", content=q, headers={"content-type": "application/sparql-query"})
    assert body.json() == got.json()
    as_csv = client.get("/sparql", params={"query": q}, headers={"accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv") and as_csv.text.startswith("s,o")
    as_tsv = client.get("/sparql", params={"query": q, "format": "tsv"})
    assert as_tsv.headers["content-type"].startswith("text/tab-separated-values")
    assert client.get("/sparql", params={"query": "ASK {}"}).json()["boolean"] is True
    assert client.get("/sparql", params={"query": q, "format": "turtle"}).status_code == 400
    assert client.get("/sparql", params={"query": "SYNTAX"}).status_code == 400
    assert client.get("/sparql").status_code == 400
    assert client.post("/sparql", content=q, headers={"content-type": "text/plain"}).status_code == 415
    assert client.get("/sparql", params={"query": "#" * 20_001}).status_code == 400
    page = client.get("/query", params={"query": q}).text
    assert 'id="results"' in page and 'id="sparql"' in page and 'id="run-query"' in page
    assert XSS not in page and "&lt;script&gt;" in page


def test_sparql_updates_are_refused_unless_allowed(runs):
    store = FakeStore()
    client = TestClient(create_app(runs, store=store))
    update = "INSERT DATA { <urn:a> <urn:b> <urn:c> }"
    assert client.post("/sparql", data={"update": update}).status_code == 400
    assert client.post("/sparql", content=update, headers={"content-type": "application/sparql-update"}).status_code \
        == 400
    assert client.post("/sparql", data={"query": update}).status_code == 400
    assert client.get("/sparql", params={"query": update}).status_code == 400
    assert client.get("/query", params={"query": update}).status_code == 200  # shown as an error on the page
    assert all(not allowed for *_, allowed in store.calls)
    writable = TestClient(create_app(runs, store=store, allow_update=True))
    assert writable.post("/sparql", data={"update": update}).status_code == 204
    assert store.calls[-1][3] is True
    assert writable.get("/sparql", params={"query": update}).status_code == 400  # never by GET


def test_sparql_queries_wait_for_a_slot_then_get_503(runs):
    """At most max_concurrent_queries run at once; one that waits past the time limit is a 503."""
    import threading

    entered, release = threading.Event(), threading.Event()

    class SlowStore(FakeStore):
        def query(self, sparql, **kwargs):
            entered.set()
            release.wait(10)
            return super().query(sparql, **kwargs)

    client = TestClient(create_app(runs, store=SlowStore(),
                                   limits=Limits(query_timeout_s=0.5, max_concurrent_queries=1)))
    first: list = []
    worker = threading.Thread(target=lambda: first.append(client.get("/sparql", params={"query": "ASK {}"})))
    worker.start()
    assert entered.wait(10)
    busy = client.get("/sparql", params={"query": "ASK {}"})
    release.set()
    worker.join(10)
    assert busy.status_code == 503 and "busy" in busy.text
    assert first[0].status_code == 200
    assert client.get("/sparql", params={"query": "ASK {}"}).status_code == 200  # the slot came back


def test_sparql_without_a_store_is_503(client):
    assert client.get("/sparql", params={"query": "ASK {}"}).status_code == 503
    assert 'id="no-store"' in client.get("/query").text


def test_sparql_over_the_real_store_gives_the_stores_rows(runs, tmp_path):
    import kgprobe.kg.store as store_mod
    from kgprobe.kg.graph import KnowledgeGraph

    path = tmp_path / "store"
    with store_mod.open_store(str(path), create=True, read_only=False) as store:
        store.load(KnowledgeGraph.from_labeled_triples([("Paris", "capital_of", "France"), (XSS, "capital_of", "Evil")],
                                                       name="capital_of"))
    q = "SELECT ?s ?l WHERE { ?s <http://www.w3.org/2000/01/rdf-schema#label> ?l } ORDER BY ?l"
    with store_mod.open_store(str(path)) as store:
        expected = json.loads(store.query(q).serialize("json"))
    assert len(expected["results"]["bindings"]) >= 4
    client = TestClient(create_app(runs, store=str(path)))
    got = client.get("/sparql", params={"query": q})
    assert got.status_code == 200 and got.json()["results"]["bindings"] == expected["results"]["bindings"]
    assert client.post("/sparql", data={"query": q}).json()["results"]["bindings"] == expected["results"]["bindings"]
    as_csv = client.get("/sparql", params={"query": q}, headers={"accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv") and XSS in as_csv.text
    update = "INSERT DATA { <urn:a> <http://www.w3.org/2000/01/rdf-schema#label> \"new\" }"
    assert client.post("/sparql", data={"update": update}).status_code == 400
    assert client.get("/sparql", params={"query": q}).json() == got.json()
    page = client.get("/query", params={"query": q}).text
    assert 'id="results"' in page and XSS not in page and "&lt;script&gt;" in page
    assert client.get("/sparql", params={"query": "SELEC nothing"}).status_code == 400
    writable = create_app(runs, store=str(path), allow_update=True)
    try:
        done = TestClient(writable).post("/sparql", content=update,
                                         headers={"content-type": "application/sparql-update"})
        assert done.status_code == 204
        labels = TestClient(writable).get("/sparql", params={"query": q, "format": "tsv"}).text
        assert '"new"' in labels
    finally:
        writable.state.store.close()


# ----------------------------------------------------------------------------- models: link prediction, embeddings
@pytest.mark.slow
def test_entity_page_with_a_trained_linkpred_run_and_embeddings(tmp_path_factory, monkeypatch):
    """A KG, its embeddings and a link-prediction model trained on it, all under RUNS_DIR."""
    from kgprobe.cli import main

    root = tmp_path_factory.mktemp("model_runs")
    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path_factory.getbasetemp() / "kgprobe_home"))
    for args in (["data", "build", "umls", "--inductive", "--out", str(root / "umls")],
                 ["linkpred", "train", "--data", str(root / "umls"), "--out", str(root / "lp"), "--encoder", "bow",
                  "--epochs", "1", "--max-train-triples", "300", "--device", "cpu", "--quiet"],
                 ["embed", str(root / "umls"), "--out", str(root / "emb"), "--index", "none", "--quiet"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0, args
    client = TestClient(create_app(root))
    kinds = {r["path"]: r["kind"] for r in client.get("/api/runs").json()["runs"]}
    assert kinds["lp"] == "linkpred" and kinds["emb"] == "embeddings" and kinds["umls"] == "kg"
    data = client.get("/api/entity/umls/acquired_abnormality", params={"k": 3}).json()
    near = data["nearest"][0]
    assert near["run"] == "emb" and len(near["results"]) == 3
    assert "acquired_abnormality" not in [r["id"] for r in near["results"]]
    pred = data["predictions"][0]
    assert pred["run"] == "lp" and pred["how"].startswith("known entity")
    assert len(pred["relations"]) == Limits().max_relations and len(pred["relations"][0]["answers"]) == 3
    # the same answers as the library gives
    from kgprobe.linkpred.predict import Predictor

    lib = Predictor.load(root / "lp")
    rel = pred["relations"][0]["relation"]
    row = lib.position("acquired_abnormality")
    expected = lib.answers(lib.entities[row], rel, k=3, exclude=row)
    assert [a["id"] for a in pred["relations"][0]["answers"]] == [a.id for a in expected]
    page = client.get("/entity/umls/acquired_abnormality").text
    assert 'id="predict-form"' in page and 'class="data nearest"' in page
    new = client.get("/api/predict/lp", params={"text": "a disease of the liver", "k": 2}).json()
    assert new["how"] == "encoded from its text" and len(new["relations"][0]["answers"]) == 2
    assert 'id="entity-text"' in client.get("/predict/lp", params={"text": "liver disease"}).text


def test_tiny_model_harvest_run_is_served(tmp_path):
    """A real harvest (a random 2-layer Llama with SmolLM2's tokenizer) on the harvest page."""
    rows = tiny_harvest(tmp_path, tmp_path / "runs" / "h")
    client = TestClient(create_app(tmp_path / "runs"))
    data = client.get("/api/harvest/h").json()
    assert [r["entities"] for r in data["rows"]] == [r["entities"] for r in rows]
    assert data["columns"] == ["<ENT0> is the capital of <ENT1> ."]
    assert client.get("/harvest/h", params={"download": "ttl"}).status_code == 200
    entity = rows[0]["entities"][0]
    assert client.get("/api/entity/h/" + quote(entity, safe="")).json()["facts"]["out_total"] >= 1


# ----------------------------------------------------------------------------- the command
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kgprobe_serve_binds_127_0_0_1_by_default(runs):
    import psutil

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kgprobe", "serve", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline, answered = time.time() + 60, None
        while time.time() < deadline and answered is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"GET /api/runs HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    answered = conn.recv(65536)
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.3)
        assert answered is not None and answered.startswith(b"HTTP/1.1 200"), answered
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" and addr.port == port for addr in listening), listening
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out


def test_serve_help_explains_the_pages_and_the_safety_rules():
    from click.testing import CliRunner

    from kgprobe.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for needle in ("RUNS_DIR", "--store", "--allow-update", "--host", "127.0.0.1", "/harvest/RUN", "/sparql",
                   "/entity/RUN/ENTITY", "/concepts/RUN", "HTML-escaped"):
        assert needle in result.output, needle


@pytest.mark.slow
def test_same_rows_through_the_store_the_http_endpoint_via_rdflib_sparqlstore_and_rdflib_on_turtle(runs, tmp_path):
    """A harvested relation in the store: one SELECT through kgprobe.kg.store, through `kgprobe serve`'s
    /sparql as a SPARQL 1.1 client sees it (rdflib's SPARQLStore over HTTP) and through rdflib over
    the harvest's Turtle file gives the same rows."""
    from rdflib import Graph
    from rdflib.plugins.stores.sparqlstore import SPARQLStore

    from kgprobe.kg.formats import save_kg
    from kgprobe.kg.graph import KnowledgeGraph
    from kgprobe.kg.store import open_store
    from kgprobe.serve.announce import announced_url

    run = tmp_path / "runs" / "cap"
    pairs = [["Paris", "France"], ["Berlin", "Germany"], [XSS, "Evil"]]
    harvest_files(run, pairs)
    save_kg(KnowledgeGraph.from_labeled_triples([(h, "capital_of", t) for h, t in pairs], scores=[0.9, 0.8, 0.1],
                                                name="cap"), run / "kg.ttl")
    with open_store(tmp_path / "store", create=True, read_only=False) as store:
        store.load(run)
    q = ("SELECT ?h ?t WHERE { ?h <https://kgprobe.org/kg/relation/capital_of> ?t } ORDER BY ?h ?t")
    with open_store(tmp_path / "store") as store:
        direct = store.query(q).values()
    on_turtle = [tuple(str(v) for v in row) for row in Graph().parse(run / "kg.ttl").query(q)]
    proc = subprocess.Popen([sys.executable, "-m", "kgprobe", "serve", str(run.parent), "--store",
                             str(tmp_path / "store"), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        url = announced_url(proc, timeout_s=90)
        over_http = [tuple(str(v) for v in row) for row in Graph(store=SPARQLStore(f"{url}/sparql")).query(q)]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert len(direct) == 3 and direct == on_turtle == over_http
