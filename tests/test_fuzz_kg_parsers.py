"""Property-based tests of every KG parser: any bytes give a graph or ONE ``KgprobeError`` line.

For every reader (plain triples TSV, KG directory, JSONL, Turtle, N-Triples, GraphML and the
``id<TAB>text`` file of ``kgprobe linkpred encode``) and for any input (random bytes, random
text, and valid files mutated by truncation, inserted tabs / newlines / quotes / invalid UTF-8 /
byte order marks, CRLF line ends, duplicated lines, a huge field), loading either succeeds or
raises ``KgprobeError`` whose message is one line that starts with the file's path; never any
other exception. A round trip property checks that what each format promises to keep survives
``save_kg`` + ``load_kg``; a few CLI runs check the ``kgprobe: error:`` line and that a failed
``kg convert`` leaves no output behind.

Examples are bounded (``max_examples``) so the whole file runs in well under a minute;
``KGPROBE_FUZZ_EXAMPLES=N`` runs N per test for a longer hunt.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.kg import KnowledgeGraph, load_kg, save_kg
from kgprobe.kg.texts import read_texts_tsv

FILE_NAMES = {"tsv": "kg.tsv", "jsonl": "kg.jsonl", "turtle": "kg.ttl", "ntriples": "kg.nt",
              "graphml": "kg.graphml"}
DIR_FILES = ("entities.tsv", "relations.tsv", "triples.tsv", "meta.json")
# KGPROBE_FUZZ_EXAMPLES=N runs N examples per test instead (a longer hunt than CI's bounded one)
_LONG = int(os.environ.get("KGPROBE_FUZZ_EXAMPLES", "0"))


def _n(default: int) -> int:
    return _LONG or default


FAST = settings(max_examples=_n(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sample_kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples(
        [("dog", "is a", "animal"), ("cat", "is a", "animal"), ("dog", "chases", "cat"),
         ("#tag", "r\tx", "back\\slash"), ("dog", "is a", "animal")],
        entity_labels={"dog": "Dog 🐕", "cat": "cat"},
        entity_descriptions={"dog": "barks\nloudly", "cat": 'says "miaow"'},
        relation_labels={"is a": "is a kind of"},
        scores=[0.5, 1.0, 0.25, 0.0, 0.75], provenance=["wn", "wn", "llm", "", "wn"], name="sample")


def _valid_files() -> dict[str, bytes]:
    """The bytes of the sample graph in every file format, plus the KG directory's files."""
    with tempfile.TemporaryDirectory() as folder:
        out = {fmt: save_kg(sample_kg(), Path(folder) / name).read_bytes() for fmt, name in FILE_NAMES.items()}
        kg_dir = save_kg(sample_kg(), Path(folder) / "kg")
        out.update({f"dir/{name}": (kg_dir / name).read_bytes() for name in DIR_FILES})
    return out


VALID = _valid_files()
# Beyond float range, beyond int()'s 4300-digit limit, or overflowing to inf / 0
HUGE_NUMBERS = ["9" * 400, "-" + "9" * 400, "9" * 5000, "1e999", "-1e999", "1e-999"]
# Fragments that break tokenizers: separators, quotes, brackets, escapes, bad UTF-8, a BOM, ...
FRAGMENTS = [b"\t", b"\n", b"\r\n", b"\r", b'"', b"'", b"\\", b"#", b"<", b">", b"{", b"}", b"[", b"]",
             b",", b":", b";", b".", b"@", b"_:", b"^^", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80",
             b"\xef\xbb\xbf", b"\\u", b"\\ud800", b"\\uD800", "é".encode(), "\u2028".encode(), b"9" * 500,
             b"[" * 3000, b"<![CDATA[", b"&#0;", b"&amp", b"<!ENTITY x 'y'>", b"head\trelation\ttail\n",
             b'{"type": "triple"}', b"1e999", b"-", b"NaN", b"true"]


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` after one to four random edits."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["truncate", "insert", "insert", "delete", "duplicate_line", "crlf",
                                     "bom", "huge", "random", "number", "number"]))
        if edit == "truncate":
            data = data[:at]
        elif edit == "insert":
            data = data[:at] + draw(st.sampled_from(FRAGMENTS)) + data[at:]
        elif edit == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 40)):]
        elif edit == "duplicate_line":  # duplicate ids, repeated records
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
        elif edit == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif edit == "bom":
            data = b"\xef\xbb\xbf" + data
        elif edit == "number":  # a score / index / version replaced by a huge or bad one
            numbers = list(re.finditer(rb"[0-9]+(?:\.[0-9]+)?", data))
            if numbers:
                found = numbers[draw(st.integers(0, len(numbers) - 1))]
                new = draw(st.sampled_from([*(n.encode() for n in HUGE_NUMBERS), b"-1", b"abc", b"", b"0.5"]))
                data = data[: found.start()] + new + data[found.end():]
        elif edit == "huge":
            data = data[:at] + b"x" * 200_000 + data[at:]
        else:
            data = data[:at] + draw(st.binary(max_size=20)) + data[at:]
    return data


def any_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.just(b""),
        mutated(valid),
    )


def check_one_line_error(err: KgprobeError, path: Path) -> None:
    message = str(err)
    assert len(message.splitlines()) == 1, message  # no \n, \r, U+2028, ... either
    assert message.startswith(str(path)), message
    assert ".tmp-" not in message[len(str(path)):], message
    assert "Traceback" not in message


@contextlib.contextmanager
def logged():
    """The log records (warnings and up) and Python warnings emitted inside the block: outside
    pytest, both print lines on the user's stderr (rdflib logged tracebacks, networkx warned)."""
    records: list = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield records
            finally:
                records.extend(caught)
    finally:
        root.removeHandler(handler)


def load_or_error(path: Path) -> KnowledgeGraph | None:
    """``load_kg(path)``: a graph, or None after checking the error; stderr must be one warning at most."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), logged() as records:
            kg = load_kg(path, progress=False)
    except KgprobeError as err:
        check_one_line_error(err, path)
        assert stderr.getvalue() == ""
        return None
    finally:
        assert records == [], [str(getattr(r, "message", r)) for r in records]
    assert isinstance(kg, KnowledgeGraph)
    warnings = stderr.getvalue().splitlines()
    assert warnings == ([f"kgprobe: warning: {path}: holds no triples"] if kg.num_triples == 0 else [])
    return kg


# ----------------------------------------------------------------------------- any input
@pytest.mark.parametrize("fmt", list(FILE_NAMES))
@FAST
@given(data=st.data())
def test_any_file_loads_or_gives_one_line_error(fmt, data):
    content = data.draw(any_bytes(VALID[fmt]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FILE_NAMES[fmt]
        path.write_bytes(content)
        load_or_error(path)


@FAST
@given(data=st.data(), which=st.sampled_from(DIR_FILES))
def test_any_kg_directory_loads_or_gives_one_line_error(data, which):
    content = data.draw(any_bytes(VALID[f"dir/{which}"]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kg"
        path.mkdir()
        for name in DIR_FILES:
            (path / name).write_bytes(content if name == which else VALID[f"dir/{name}"])
        load_or_error(path)


@settings(max_examples=_n(60), deadline=None)
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         mutated(b"n1\ta disease of the lung\nn2\tcell function\n")))
def test_any_texts_file_reads_or_gives_one_line_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "new.tsv"
        path.write_bytes(content)
        try:
            ids, texts = read_texts_tsv(path)
        except KgprobeError as err:
            check_one_line_error(err, path)
            return
    assert ids and len(ids) == len(texts) == len(set(ids))
    assert all(i == i.strip() and i and "\t" not in i for i in ids)
    assert all(t == t.strip() and t and "\t" not in t and "\n" not in t for t in texts)


def test_texts_file_messages(tmp_path):
    path = tmp_path / "new.tsv"
    # a byte order mark, CRLF, a blank line, U+2028 inside a text (not a line break here)
    path.write_bytes("\ufeffn1\ta disease\u2028of the lung\r\n\nn2\t cell function \r\n".encode())
    assert read_texts_tsv(path) == (["n1", "n2"], ["a disease\u2028of the lung", "cell function"])
    for content, message in [
        (b"n1\tok\nn2\t\xff\n", f"{path}:2: not valid UTF-8 text"),
        (b"n1\tok\nn1\tagain\n", f"{path}:2: duplicate id 'n1' (first on line 1)"),
        (b"n1\tok\tmore\n", f"{path}:1: expected id<TAB>text (two non-empty tab-separated fields)"),
        (b"\n \n", f"{path}: no entities in the file"),
    ]:
        path.write_bytes(content)
        with pytest.raises(KgprobeError) as err:
            read_texts_tsv(path)
        assert str(err.value).startswith(message)
    with pytest.raises(KgprobeError, match=f"^{tmp_path}: is a directory, expected a file of id<TAB>text lines"):
        read_texts_tsv(tmp_path)
    with pytest.raises(KgprobeError, match=f"^{tmp_path / 'nope.tsv'}: no such file or directory"):
        read_texts_tsv(tmp_path / "nope.tsv")


# ----------------------------------------------------------------------------- structured input
# Random bytes rarely get past a tokenizer; these build files that parse, from the pieces each
# reader interprets (kgprobe's own vocabulary included), with odd values in every slot.
VALUES = ["a", "b", "r", "", " ", "0", "1", "-1", "0.5", "nan", "NaN", "inf", "INF", "true", "false",
          "abc", "#c", "\\t", "\\#x", "\\", "1_0", " 5", "head", "relation", "tail", "score", "provenance",
          *HUGE_NUMBERS]
values = st.one_of(st.sampled_from(VALUES), st.text(max_size=8))


@st.composite
def tsv_files(draw, header: tuple[str, ...] | None = None) -> bytes:
    lines = [] if header is None or draw(st.booleans()) else ["\t".join(header)]
    for _ in range(draw(st.integers(0, 6))):
        lines.append("\t".join(draw(st.lists(values, min_size=1, max_size=6))))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | values
    | st.sampled_from([10**400, -(10**400), 2**1024, 10**39]) | st.just([]) | st.just({}),
    lambda inner: st.lists(inner, min_size=1, max_size=3) | st.dictionaries(values, inner, min_size=1, max_size=3),
    max_leaves=6)
JSONL_KEYS = ["id", "label", "description", "head", "relation", "tail", "score", "provenance", "name",
              "format", "version", "scores"]


@st.composite
def jsonl_files(draw) -> bytes:
    import json

    lines = []
    for _ in range(draw(st.integers(0, 8))):
        record = {"type": draw(st.sampled_from(["meta", "entity", "relation", "triple"]) | json_values)}
        for key in draw(st.lists(st.sampled_from(JSONL_KEYS), max_size=5, unique=True)):
            record[key] = draw(st.sampled_from(["a", "b", "r"]) | json_values)
        lines.append(json.dumps(record) if draw(st.integers(0, 9)) else draw(st.sampled_from(
            ["[" * 3000, '{"type": "meta", "version": ' + "9" * 5000 + "}", '"\\ud800"', "{", "null"])))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


BASE = "https://kgprobe.org/kg/"
KGP = BASE + "schema#"
XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NODES = [f"<{BASE}graph>", f"<{BASE}entity/a>", f"<{BASE}entity/b>", f"<{BASE}entity/%61>",
         f"<{BASE}relation/r>", f"<{BASE}triple/0>", f"<{BASE}triple/1>", "<http://example.org/x>",
         "<relative>", "_:b0"]
PREDICATES = [f"<{RDF_NS}{p}>" for p in ("type", "subject", "predicate", "object")] + [
    f"<{KGP}{p}>" for p in ("index", "score", "provenance", "hasScores", "hasProvenance")] + [
    "<http://www.w3.org/2000/01/rdf-schema#label>", "<http://purl.org/dc/terms/description>",
    "<http://www.w3.org/2004/02/skos/core#prefLabel>", f"<{BASE}relation/r>", "<http://example.org/p>"]
CLASSES = [f"<{KGP}{c}>" for c in ("Graph", "Entity", "Relation")] + [f"<{RDF_NS}Statement>"]


@st.composite
def rdf_literals(draw) -> str:
    lexical = draw(values).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    suffix = draw(st.sampled_from(["", "@en", "@fr", *(f"^^<{XSD}{t}>" for t in (
        "integer", "int", "double", "decimal", "boolean", "string", "dateTime"))]))
    return f'"{lexical}"{suffix}'


SKELETON = [  # a small graph in kgprobe's layout: two entities, one relation, one scored triple
    (f"<{BASE}graph>", f"<{RDF_NS}type>", f"<{KGP}Graph>"),
    (f"<{BASE}graph>", "<http://www.w3.org/2000/01/rdf-schema#label>", '"g"'),
    (f"<{BASE}graph>", f"<{KGP}hasScores>", f'"true"^^<{XSD}boolean>'),
    (f"<{BASE}entity/a>", f"<{RDF_NS}type>", f"<{KGP}Entity>"),
    (f"<{BASE}entity/a>", f"<{KGP}index>", f'"0"^^<{XSD}integer>'),
    (f"<{BASE}entity/b>", f"<{RDF_NS}type>", f"<{KGP}Entity>"),
    (f"<{BASE}entity/b>", f"<{KGP}index>", f'"1"^^<{XSD}integer>'),
    (f"<{BASE}relation/r>", f"<{RDF_NS}type>", f"<{KGP}Relation>"),
    (f"<{BASE}relation/r>", f"<{KGP}index>", f'"0"^^<{XSD}integer>'),
    (f"<{BASE}entity/a>", f"<{BASE}relation/r>", f"<{BASE}entity/b>"),
    (f"<{BASE}triple/0>", f"<{RDF_NS}type>", f"<{RDF_NS}Statement>"),
    (f"<{BASE}triple/0>", f"<{RDF_NS}subject>", f"<{BASE}entity/a>"),
    (f"<{BASE}triple/0>", f"<{RDF_NS}predicate>", f"<{BASE}relation/r>"),
    (f"<{BASE}triple/0>", f"<{RDF_NS}object>", f"<{BASE}entity/b>"),
    (f"<{BASE}triple/0>", f"<{KGP}index>", f'"0"^^<{XSD}integer>'),
    (f"<{BASE}triple/0>", f"<{KGP}score>", f'"0.5"^^<{XSD}double>'),
]
BROKEN_LINES = ["<http://a b> <http://p> <http://c> .", '<http://a> <http://p> "\\uD800" .',
                "<http://a> <http://p> <http://c> <http://g> .", "@prefix x: <http://x/> .", "<http://a> <http://p>"]


@st.composite
def ntriples_files(draw) -> bytes:
    """kgprobe's layout with lines dropped, objects swapped for odd terms, random lines added."""
    triples = [list(t) for t in SKELETON] if draw(st.integers(0, 4)) else []
    for triple in triples:
        if draw(st.integers(0, 5)) == 0:
            triple[2] = draw(st.sampled_from(NODES) | st.sampled_from(CLASSES) | rdf_literals())
    triples = [t for t in triples if draw(st.integers(0, 9))]
    for _ in range(draw(st.integers(0, 6))):
        obj = draw(st.sampled_from(NODES) | st.sampled_from(CLASSES) | rdf_literals())
        triples.insert(draw(st.integers(0, len(triples))),
                       [draw(st.sampled_from(NODES)), draw(st.sampled_from(PREDICATES)), obj])
    lines = [" ".join(t) + " ." for t in triples]
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(BROKEN_LINES)))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


# (for, attr.name, attr.type): kgprobe's own attributes with their usual and some odd types
GRAPHML_KEYS = [("graph", "name", "string"), ("graph", "relations", "string"), ("graph", "has_scores", "boolean"),
                ("graph", "has_provenance", "boolean"), ("node", "label", "string"), ("node", "index", "int"),
                ("node", "index", "string"), ("edge", "relation", "string"), ("edge", "label", "string"),
                ("edge", "index", "long"), ("edge", "score", "double"), ("edge", "score", "long"),
                ("edge", "score", "string"), ("edge", "provenance", "string"), ("all", "weight", "float"),
                ("node", "x", "vector"), ("edge", "y", "bogus")]
JSON_TEXTS = ['[["r", "R"]]', '[["r", "R"], ["r", "S"]]', "[" * 3000, "{}", "5", '[["r"]]']


@st.composite
def graphml_files(draw) -> bytes:
    from xml.sax.saxutils import escape, quoteattr

    keys = draw(st.lists(st.sampled_from(GRAPHML_KEYS), max_size=7, unique=True))
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">']
    out += [f'<key id="k{i}" for="{kind}" attr.name="{name}" attr.type="{type_}"/>'
            for i, (kind, name, type_) in enumerate(keys)]

    def data(element: str) -> str:
        return "".join(f'<data key="k{i}">{escape(draw(values | st.sampled_from(JSON_TEXTS)))}</data>'
                       for i, (kind, _, _) in enumerate(keys) if kind in (element, "all") and draw(st.integers(0, 3)))

    out.append(f'<graph edgedefault="{draw(st.sampled_from(["directed", "undirected"]))}">' + data("graph"))
    nodes = draw(st.lists(st.sampled_from(["a", "b", "c", "", "0"]), max_size=4))
    out += [f"<node id={quoteattr(n)}>{data('node')}</node>" for n in nodes]
    for _ in range(draw(st.integers(0, 4))):
        source, target = draw(st.sampled_from(nodes or ["a"])), draw(st.sampled_from(nodes or ["b"]))
        out.append(f"<edge source={quoteattr(source)} target={quoteattr(target)}>{data('edge')}</edge>")
    out.append("</graph></graphml>")
    return "\n".join(out).encode("utf-8", "surrogatepass")


STRUCTURED = {"tsv": tsv_files(("head", "relation", "tail", "score")), "jsonl": jsonl_files(),
              "ntriples": ntriples_files(), "turtle": ntriples_files(), "graphml": graphml_files()}


@pytest.mark.parametrize("fmt", list(FILE_NAMES))
@settings(max_examples=_n(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_structured_file_loads_or_gives_one_line_error(fmt, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FILE_NAMES[fmt]
        path.write_bytes(data.draw(STRUCTURED[fmt]))
        load_or_error(path)


@settings(max_examples=_n(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities=tsv_files(("id", "label", "description")), relations=tsv_files(("id", "label")),
       triples=tsv_files(("head", "relation", "tail", "score", "provenance")),
       meta=st.none() | jsonl_files())
def test_structured_kg_directory_loads_or_gives_one_line_error(entities, relations, triples, meta):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kg"
        path.mkdir()
        (path / "entities.tsv").write_bytes(entities)
        (path / "relations.tsv").write_bytes(relations)
        (path / "triples.tsv").write_bytes(triples)
        if meta is not None:
            (path / "meta.json").write_bytes(meta.split(b"\n")[0])
        load_or_error(path)


# ----------------------------------------------------------------------------- round trips
# Small pools mixed with any text, so collisions (shared ids) and tricky spellings are common.
TRICKY = ["", " ", "a", "head", "relation", "tail", "score", "#", "#x", "\\", "\\t", "\t", "\n", "\r",
          "\r\n", "\ufeff", "\ufeffx", "\u2028", "\x85", '"', "'", "<", "&", "%20", "a b", "ü", "🐈", "_:b0",
          "http://example.org/x", "0.5", "~", "-", ".", "\x00", "\x07", "\ufffe"]
texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))


@st.composite
def graphs(draw) -> KnowledgeGraph:
    entities = draw(st.lists(texts, min_size=1, max_size=6, unique=True))
    relations = draw(st.lists(texts, min_size=1, max_size=3, unique=True))
    n = draw(st.integers(0, 8))
    index = st.integers(0, len(entities) - 1)
    triples = [(draw(index), draw(st.integers(0, len(relations) - 1)), draw(index)) for _ in range(n)]
    scores = draw(st.none() | st.lists(st.floats(width=32, allow_nan=False), min_size=n, max_size=n))
    provenance = draw(st.none() | st.lists(texts, min_size=n, max_size=n))
    return KnowledgeGraph(
        entity_ids=entities, relation_ids=relations, triples=torch.tensor(triples, dtype=torch.long),
        entity_labels=draw(st.lists(texts, min_size=len(entities), max_size=len(entities))),
        entity_descriptions=draw(st.lists(texts, min_size=len(entities), max_size=len(entities))),
        relation_labels=draw(st.lists(texts, min_size=len(relations), max_size=len(relations))),
        scores=scores, provenance=provenance, name=draw(texts))


def _xml_cannot_hold(kg: KnowledgeGraph) -> bool:
    from kgprobe.kg.formats.graphml import _NOT_XML

    fields = [*kg.entity_ids, *kg.entity_labels, *kg.entity_descriptions, *kg.relation_ids,
              *kg.relation_labels, *(kg.provenance or ()), kg.name]
    return any(_NOT_XML.search(text) for text in fields)


@pytest.mark.parametrize("fmt", ["dir", "jsonl", "turtle", "ntriples", "graphml"])
@settings(max_examples=_n(50), deadline=None)
@given(kg=graphs())
def test_lossless_formats_round_trip_any_graph(fmt, kg):
    """Everything survives, for any text; GraphML refuses (one line) what XML cannot hold."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("kg" if fmt == "dir" else FILE_NAMES[fmt])
        if fmt == "graphml" and _xml_cannot_hold(kg):
            with pytest.raises(KgprobeError, match="GraphML \\(XML\\) cannot hold"):
                save_kg(kg, path)
            assert list(Path(folder).iterdir()) == []
            return
        with contextlib.redirect_stderr(io.StringIO()):
            loaded = load_kg(save_kg(kg, path), progress=False)
    assert loaded.entity_ids == kg.entity_ids
    assert loaded.relation_ids == kg.relation_ids
    assert loaded.labeled_triples() == kg.labeled_triples()
    assert loaded.entity_labels == kg.entity_labels
    assert loaded.entity_descriptions == kg.entity_descriptions
    assert loaded.relation_labels == kg.relation_labels
    assert loaded.provenance == kg.provenance
    assert (loaded.scores is None) == (kg.scores is None)
    if kg.scores is not None:
        assert torch.equal(loaded.scores, kg.scores)
    assert loaded.name == kg.name


@settings(max_examples=_n(80), deadline=None)
@given(kg=graphs())
def test_tsv_round_trips_triples_and_scores_of_any_graph(kg):
    """Plain TSV keeps the triples (any ids: tabs, newlines, a leading '#' or BOM) and scores."""
    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stderr(io.StringIO()):
            loaded = load_kg(save_kg(kg, Path(folder) / "kg.tsv"))
    assert loaded.labeled_triples() == kg.labeled_triples()
    if kg.num_triples:
        assert (loaded.scores is None) == (kg.scores is None)
        if kg.scores is not None:
            assert torch.equal(loaded.scores, kg.scores)


# ----------------------------------------------------------------------------- through the CLI
def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc, logged() as records:
        main(args)
    out, err = capsys.readouterr()
    assert records == [], [str(getattr(r, "message", r)) for r in records]  # more lines on stderr
    return exc.value.code, out, err


def check_cli(source: Path, out_folder: Path, capsys) -> None:
    """``kg stats`` and ``kg convert`` exit 0, or 2 with one error line and no output left behind."""
    out_folder.mkdir(exist_ok=True)
    for args in (["kg", "stats", str(source)], ["kg", "convert", str(source), str(out_folder / "out.ttl")]):
        before = sorted(p.name for p in out_folder.iterdir())
        code, _, err = _cli(args, capsys)
        assert "Traceback" not in err
        lines = err.splitlines()
        if code == 0:
            assert all(line.startswith("kgprobe: warning: ") for line in lines), err
            continue
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("kgprobe: error: "), err
        assert sorted(p.name for p in out_folder.iterdir()) == before


@pytest.mark.parametrize("name, content", [
    ("bad_utf8.tsv", b"a\tr\tb\n\xff\xfe\tr\tc\n"),
    ("bom_crlf.tsv", b"\xef\xbb\xbfa\tr\tb\r\nb\tr\tc\r\n"),
    ("empty.tsv", b""),
    ("empty.graphml", b""),
    ("deep.jsonl", b"[" * 50_000),
    ("big_number.jsonl", b'{"type": "meta", "version": ' + b"9" * 5000 + b"}\n"),
    ("surrogate.jsonl", b'{"type": "entity", "id": "\\ud800"}\n'),
    ("truncated.ttl", b"@prefix ex: <http://example.org/> .\nex:a ex:b ex:"),
    ("bad_literal.ttl", b'<http://a> <http://p> "x"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
                        b"<http://a> <http://q> <http://b> .\n"),
    ("huge_score.graphml", b'<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                           b'<key id="s" for="edge" attr.name="score" attr.type="long"/><graph edgedefault='
                           b'"directed"><node id="a"/><edge source="a" target="a"><data key="s">' + b"9" * 400
                           + b"</data></edge></graph></graphml>"),
    ("untyped_key.graphml", b'<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                            b'<key id="k" for="node" attr.name="label"/><graph edgedefault="directed">'
                            b'<node id="a"><data key="k">A</data></node><edge source="a" target="a"/>'
                            b"</graph></graphml>"),
    ("huge_score.nt", b"\n".join(" ".join(t).encode() + b" ." for t in SKELETON).replace(
        b'"0.5"^^<' + XSD.encode() + b'double>', b'"' + b"9" * 400 + b'"^^<' + XSD.encode() + b'integer>') + b"\n"),
    ("nested_relations.graphml", VALID["graphml"].replace(b"[[", b"[" * 5000 + b"[[", 1)),
])
def test_cli_on_nasty_files(tmp_path, capsys, name, content):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_bytes(content)
    check_cli(path, tmp_path / "out", capsys)


@settings(max_examples=_n(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), fmt=st.sampled_from(list(FILE_NAMES)))
def test_cli_on_mutated_files(tmp_path_factory, capsys, data, fmt):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / FILE_NAMES[fmt]
    path.write_bytes(data.draw(mutated(VALID[fmt])))
    check_cli(path, folder / "out", capsys)


def test_cli_on_paths_that_are_not_kg_files(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.ttl").mkdir()
    (tmp_path / ".kg.ttl.tmp-abc123_x").write_bytes(VALID["turtle"])
    for name, expect in [("folder", "is a directory, expected a KG file"),
                         ("folder.ttl", "is a directory, expected a turtle file (.ttl)"),
                         ("missing.ttl", "no such file or directory"),
                         (".kg.ttl.tmp-abc123_x", "is an unfinished temporary output")]:
        code, _, err = _cli(["kg", "stats", str(tmp_path / name)], capsys)
        assert code == 2 and err.count("\n") == 1 and expect in err, err
