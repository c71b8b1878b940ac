"""RDF (Turtle and N-Triples): ordinary RDF for triple stores, read back losslessly.

Layout (``kgp`` is ``<base>schema#``, base ``https://kgprobe.org/kg/`` by default)::

    <base>graph          a kgp:Graph ; rdfs:label "name" ; kgp:hasScores false ; ...
    <base>entity/<id>    a kgp:Entity ; rdfs:label "..." ; dcterms:description "..." ; kgp:index 0 .
    <base>relation/<id>  a kgp:Relation ; rdfs:label "..." ; kgp:index 0 .
    <base>entity/<h> <base>relation/<r> <base>entity/<t> .     # each KG triple, as plain RDF
    <base>triple/<i>     a rdf:Statement ; rdf:subject ... ; rdf:predicate ... ; rdf:object ... ;
                         kgp:index i ; kgp:score "0.9"^^xsd:double ; kgp:provenance "..." .

Ids are percent-quoted into the IRIs. Every triple is also reified (standard RDF reification)
because RDF graphs are unordered sets: the statements carry the triple's position, score and
provenance, so order and repeated triples survive. A repeated triple is still one plain RDF
triple, though.

Files are written directly as text: rdflib's in-memory store and Turtle serializer take minutes
on a WordNet-sized graph, while the syntax needed here (IRIs, strings, numbers) is small. Files
are read with pyoxigraph's streaming parser (five to ten times faster than rdflib's; it reports
``line``/``column`` for every syntax error) into plain Python terms; a progress bar on stderr
follows the bytes read for files over a few MB.

Any other RDF file is read as a plain graph: every triple between two IRIs whose predicate is
not RDF/RDFS bookkeeping becomes a KG triple, ordered by IRI; ids are the full IRIs; labels and
descriptions come from ``rdfs:label`` / ``skos:prefLabel`` and ``dcterms:description`` /
``dc:description`` / ``skos:definition`` / ``rdfs:comment``.
"""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator, NamedTuple
from urllib.parse import quote, unquote

import torch

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats.tsv import META_FORMAT, META_VERSION, score_strings
from kgprobe.kg.graph import KnowledgeGraph

if TYPE_CHECKING:  # rdflib is only needed for the in-memory to_rdf / from_rdf
    from rdflib import Graph

DEFAULT_BASE = "https://kgprobe.org/kg/"
RDF_FORMATS = {"turtle": "turtle", "ntriples": "nt"}  # kgprobe name -> rdflib / file-suffix name
# Files at least this big get a progress bar while they are parsed (smaller ones take < 1 s).
PROGRESS_MIN_BYTES = 8 * 2**20

# Vocabularies, as plain strings: the reader works on str IRIs (see _Literal / _Blank below).
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
XSD = "http://www.w3.org/2001/XMLSchema#"
DCTERMS = "http://purl.org/dc/terms/"
DC = "http://purl.org/dc/elements/1.1/"
SKOS = "http://www.w3.org/2004/02/skos/core#"
OWL = "http://www.w3.org/2002/07/owl#"
RDF_TYPE, RDF_STATEMENT = RDF + "type", RDF + "Statement"
RDF_SUBJECT, RDF_PREDICATE, RDF_OBJECT = RDF + "subject", RDF + "predicate", RDF + "object"
RDFS_LABEL, DCTERMS_DESCRIPTION = RDFS + "label", DCTERMS + "description"

# Predicates that describe nodes rather than relate them, skipped when reading foreign RDF
# (everything in the rdf: namespace is skipped too).
_NON_RELATIONS = frozenset({
    RDFS_LABEL, RDFS + "comment", RDFS + "seeAlso", RDFS + "isDefinedBy", RDFS + "domain", RDFS + "range",
    SKOS + "prefLabel", SKOS + "altLabel", SKOS + "definition", DCTERMS_DESCRIPTION, DC + "description",
    OWL + "imports",
})
_LABEL_PREDICATES = (RDFS_LABEL, SKOS + "prefLabel")  # in order of preference
_DESCRIPTION_PREDICATES = (DCTERMS_DESCRIPTION, DC + "description", SKOS + "definition", RDFS + "comment")


def entity_iri(entity_id: str, *, base: str = DEFAULT_BASE) -> str:
    """The IRI an entity gets in kgprobe's RDF (handy for SPARQL over a saved graph)."""
    return base + "entity/" + quote(entity_id, safe="")


def relation_iri(relation_id: str, *, base: str = DEFAULT_BASE) -> str:
    """The IRI a relation gets in kgprobe's RDF."""
    return base + "relation/" + quote(relation_id, safe="")


# --------------------------------------------------------------------------- writing
# Characters an IRIREF may not contain (Turtle / N-Triples grammar).
_NOT_IN_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')
# A percent-quoted id (or vocabulary word) that is a valid Turtle local name as written; the
# rest ('~', a leading '-' or '.', a trailing '.') are written as full IRIs instead.
_LOCAL_NAME = re.compile(r"(?:[A-Za-z0-9_%](?:[A-Za-z0-9_.%-]*[A-Za-z0-9_%-])?)?")
# numpy's spellings of the special floats -> XSD's (readers also accept numpy's, as older files have them)
_XSD_SPECIAL = {"inf": "INF", "-inf": "-INF", "nan": "NaN"}
_STRING_ESCAPES = str.maketrans({
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
    **{chr(c): f"\\u{c:04X}" for c in range(0x20) if chr(c) not in "\n\r\t"},
})


class _Syntax:
    """Renders terms as N-Triples (full IRIs, typed literals) or Turtle (prefixed names)."""

    def __init__(self, base: str, *, turtle: bool, graph: str | None = None):
        for what, iri in (("base", base), ("graph", graph or "")):
            if _NOT_IN_IRI.search(iri):
                raise KgprobeError(f"RDF {what} {iri!r} contains a character an IRI cannot hold")
        self.turtle = turtle
        self.prefixes = {
            "rdf": RDF, "rdfs": RDFS, "xsd": XSD, "dcterms": DCTERMS,
            "kgp": base + "schema#", "entity": base + "entity/", "relation": base + "relation/",
            # statements live under the graph node, so several KGs in one store never share one
            "triple": (graph + "/" if graph else base) + "triple/",
        }
        self.type = "a" if turtle else self.name("rdf", "type")
        self.graph_node = f"<{graph or base + 'graph'}>"

    def name(self, prefix: str, local: str) -> str:
        """An IRI given as a prefix and an already IRI-safe local part."""
        if self.turtle and _LOCAL_NAME.fullmatch(local):
            return f"{prefix}:{local}"
        return f"<{self.prefixes[prefix]}{local}>"

    @staticmethod
    def string(text: str) -> str:
        return '"' + text.translate(_STRING_ESCAPES) + '"'

    def integer(self, value: int) -> str:
        return str(value) if self.turtle else f'"{value}"^^{self.name("xsd", "integer")}'

    def boolean(self, value: bool) -> str:
        text = "true" if value else "false"
        return text if self.turtle else f'"{text}"^^{self.name("xsd", "boolean")}'

    def double(self, lexical: str) -> str:
        # Always typed: Turtle's bare 1.5e0 form would need reformatting the float32 repr.
        lexical = _XSD_SPECIAL.get(lexical, lexical)
        return f'"{lexical}"^^{self.name("xsd", "double")}'


def _blocks(kg: KnowledgeGraph, syntax: _Syntax) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """``(subject, [(predicate, object), ...])`` for the whole layout, terms rendered."""
    name, string, integer = syntax.name, syntax.string, syntax.integer
    label, index, a = name("rdfs", "label"), name("kgp", "index"), syntax.type
    yield syntax.graph_node, [
        (a, name("kgp", "Graph")), (label, string(kg.name)),
        (name("kgp", "format"), string(META_FORMAT)), (name("kgp", "version"), integer(META_VERSION)),
        (name("kgp", "hasScores"), syntax.boolean(kg.scores is not None)),
        (name("kgp", "hasProvenance"), syntax.boolean(kg.provenance is not None)),
    ]
    relations = [name("relation", quote(r, safe="")) for r in kg.relation_ids]
    relation_type = name("kgp", "Relation")
    for i, (iri, text) in enumerate(zip(relations, kg.relation_labels)):
        yield iri, [(a, relation_type), (label, string(text)), (index, integer(i))]
    entities = [name("entity", quote(e, safe="")) for e in kg.entity_ids]
    entity_type, description = name("kgp", "Entity"), name("dcterms", "description")
    for i, (iri, text, gloss) in enumerate(zip(entities, kg.entity_labels, kg.entity_descriptions)):
        pairs = [(a, entity_type), (label, string(text))]
        if gloss:
            pairs.append((description, string(gloss)))
        pairs.append((index, integer(i)))
        yield iri, pairs
    rows = kg.triples.tolist()
    for h, r, t in rows:
        yield entities[h], [(relations[r], entities[t])]
    statement_type = name("rdf", "Statement")
    subject, predicate, object_ = name("rdf", "subject"), name("rdf", "predicate"), name("rdf", "object")
    score, provenance = name("kgp", "score"), name("kgp", "provenance")
    scores = None if kg.scores is None else score_strings(kg.scores)
    for i, (h, r, t) in enumerate(rows):
        pairs = [(a, statement_type), (subject, entities[h]), (predicate, relations[r]),
                 (object_, entities[t]), (index, integer(i))]
        if scores is not None:
            pairs.append((score, syntax.double(scores[i])))
        if kg.provenance is not None:
            pairs.append((provenance, string(kg.provenance[i])))
        yield name("triple", str(i)), pairs


def rdf_lines(kg: KnowledgeGraph, *, format: str = "turtle", base: str = DEFAULT_BASE,
              graph: str | None = None) -> Iterator[str]:
    """The text of a Turtle or N-Triples file for ``kg``, in chunks. ``graph``: the IRI of the graph
    node (default ``<base>graph``); the reified statements are ``<graph>/triple/<i>`` then (default
    ``<base>triple/<i>``), so KGs loaded side by side into one store keep their statements apart
    while sharing the entity and relation IRIs."""
    _check_format(format)
    syntax = _Syntax(base, turtle=format == "turtle", graph=graph)
    if format == "turtle":
        yield from (f"@prefix {p}: <{iri}> .\n" for p, iri in syntax.prefixes.items())
        previous = 2
        for subject, pairs in _blocks(kg, syntax):
            body = " ;\n    ".join(f"{p} {o}" for p, o in pairs)
            # A blank line around every multi-line block; the plain triples stay one per line.
            yield f"{subject} {body} .\n" if len(pairs) == previous == 1 else f"\n{subject} {body} .\n"
            previous = len(pairs)
    else:
        for subject, pairs in _blocks(kg, syntax):
            yield "".join(f"{subject} {p} {o} .\n" for p, o in pairs)


def save_rdf(kg: KnowledgeGraph, target: str | Path, *, format: str = "turtle",
             base: str = DEFAULT_BASE) -> Path:
    """Write ``kg`` as Turtle or N-Triples (``format`` is ``"turtle"`` or ``"ntriples"``)."""
    target = Path(target)
    lines = rdf_lines(kg, format=format, base=base)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    return target


def to_rdf(kg: KnowledgeGraph, *, base: str = DEFAULT_BASE) -> "Graph":
    """The same layout as an in-memory ``rdflib.Graph`` (for SPARQL and friends)."""
    from rdflib import Graph

    return Graph().parse(data="".join(rdf_lines(kg, format="ntriples", base=base)), format="nt")


def _check_format(format: str) -> None:
    if format not in RDF_FORMATS:
        raise KgprobeError(f"unknown RDF format {format!r} (expected {' or '.join(RDF_FORMATS)})")


# --------------------------------------------------------------------------- reading
# Terms as plain Python values, built straight from the parser's output: an IRI is a ``str``,
# the other two kinds are tuples (so an IRI never equals one). rdflib terms cost several times
# more to build, and rdflib's Literal logs a traceback for every lexical form it cannot convert.
class _Literal(NamedTuple):
    lexical: str
    datatype: str  # "" for a plain string
    language: str  # "" when untagged


class _Blank(NamedTuple):
    """A blank node, or an RDF 1.2 triple term: a node that is never a KG entity."""
    label: str


_STRING_TYPES = frozenset({"", XSD + "string", RDF + "langString"})
_INTEGER_TYPES = frozenset(XSD + t for t in (
    "integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger",
    "nonPositiveInteger", "negativeInteger", "unsignedLong", "unsignedInt", "unsignedShort", "unsignedByte"))
_NUMBER_TYPES = _INTEGER_TYPES | {XSD + "decimal", XSD + "double", XSD + "float"}
# XSD lexical forms only: Python's int()/float() also take '1_000', ' 5', 'infinity', and int()
# refuses more than 4300 digits with a ValueError.
_INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?INF|NaN|-?inf|nan")


def _integer(term: Any) -> int | None:
    if isinstance(term, _Literal) and term.datatype in _INTEGER_TYPES and _INTEGER.fullmatch(term.lexical):
        return int(term.lexical)
    return None


def _number(term: Any) -> float | None:
    if isinstance(term, _Literal) and term.datatype in _NUMBER_TYPES and _NUMBER.fullmatch(term.lexical):
        return float(term.lexical)  # float() never overflows on a string: it gives inf
    return None


def _is_true(term: Any) -> bool:
    return isinstance(term, _Literal) and term.datatype == XSD + "boolean" and term.lexical in ("true", "1")


def _text(term: Any) -> str:
    """A label or description as text: a literal's lexical form, else the node as written."""
    if isinstance(term, _Literal):
        return term.lexical
    return term if isinstance(term, str) else _n3(term)


def _n3(term: Any) -> str:
    """A term as Turtle would write it, for error messages (long literals shortened)."""
    if isinstance(term, _Blank):
        return f"_:{term.label}"
    if not isinstance(term, _Literal):
        return f"<{term}>"
    lexical = term.lexical if len(term.lexical) <= 60 else term.lexical[:57] + "..."
    text = _Syntax.string(lexical)
    if term.language:
        return f"{text}@{term.language}"
    return text if term.datatype in _STRING_TYPES else f"{text}^^<{term.datatype}>"


class _ProgressReader(io.RawIOBase):
    """A binary file for the parser that skips a UTF-8 byte order mark and reports bytes read."""

    def __init__(self, file: BinaryIO, bar: Any):
        super().__init__()
        self.file, self.bar = file, bar
        # Turtle has no byte order mark and pyoxigraph rejects one; editors on Windows write it.
        if file.read(3) != b"\xef\xbb\xbf":
            file.seek(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.file.readinto(buffer)
        self.bar.update(count or 0)
        return count

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.bar.update(len(data))
        return data


def _parse(path: Path, format: str, *, progress: bool) -> list[tuple]:
    """Every triple of the file as ``(subject, predicate IRI, object)`` in plain terms."""
    import pyoxigraph
    from tqdm import tqdm

    iri, literal, blank = pyoxigraph.NamedNode, pyoxigraph.Literal, pyoxigraph.BlankNode

    def term(node: Any) -> Any:
        kind = type(node)
        if kind is iri:
            return node.value
        if kind is literal:
            datatype = node.datatype.value
            return _Literal(node.value, "" if datatype in _STRING_TYPES else datatype, node.language or "")
        return _Blank(node.value if kind is blank else str(node))  # str() of a triple term: its N-Triples form

    syntax = pyoxigraph.RdfFormat.TURTLE if format == "turtle" else pyoxigraph.RdfFormat.N_TRIPLES
    size = path.stat().st_size
    with open(path, "rb") as file, tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"reading {path.name}",
            file=sys.stderr, leave=False, disable=not (progress and size >= PROGRESS_MIN_BYTES)) as bar:
        try:
            quads = pyoxigraph.parse(_ProgressReader(file, bar), format=syntax, base_iri=path.resolve().as_uri())
            return [(term(q.subject), q.predicate.value, term(q.object)) for q in quads]
        except (SyntaxError, ValueError) as err:  # pyoxigraph: SyntaxError for bad input
            raise _parse_error(path, format, err) from None


def load_rdf(path: str | Path, *, format: str = "turtle", progress: bool = True) -> KnowledgeGraph:
    """Read a Turtle / N-Triples file, kgprobe-written or not (see the module docstring).

    ``progress``: show a progress bar on stderr for files over :data:`PROGRESS_MIN_BYTES`.
    """
    _check_format(format)
    path = Path(path)
    triples = _parse(path, format, progress=progress)
    try:
        return _from_triples(triples, name=path.stem)
    except KgprobeError as err:
        raise KgprobeError(str(err), path=path) from None


def _parse_error(path: Path, format: str, err: Exception) -> KgprobeError:
    """One line naming the file and line; pyoxigraph says 'Parser error at line 3 column 11: ...'."""
    text = " ".join(str(err.args[0] if err.args else err).split()) or type(err).__name__
    found = re.match(r"Parser error at line (\d+) (?:column \d+|between columns \d+ and \d+): (.*)", text)
    detail = (found.group(2) if found else text)[:300]
    if found is None:
        return KgprobeError(f"cannot parse as {format}: {detail}", path=path)
    line, column = found.group(1), re.search(r"columns? (\d+)", text).group(1)
    if format == "ntriples":
        # N-Triples errors name the line after the colon (tests match '<file>: cannot parse as ntriples').
        return KgprobeError(f"cannot parse as {format}: line {line}, column {column}: {detail}", path=path)
    return KgprobeError(f"cannot parse as {format}: column {column}: {detail}", path=path, line=int(line))


def from_rdf(graph: "Graph", *, name: str = "kg") -> KnowledgeGraph:
    """A knowledge graph from an rdflib graph (kgprobe's own layout, or any RDF)."""
    from rdflib import BNode, Literal, URIRef

    def term(node: Any) -> Any:
        if isinstance(node, URIRef):
            return str(node)
        if isinstance(node, Literal):
            datatype = str(node.datatype or "")
            return _Literal(str(node), "" if datatype in _STRING_TYPES else datatype, node.language or "")
        return _Blank(str(node) if isinstance(node, BNode) else node.n3())

    return _from_triples([(term(s), str(p), term(o)) for s, p, o in graph], name=name)


def _from_triples(triples: list[tuple], *, name: str) -> KnowledgeGraph:
    base = _kgprobe_base(triples)
    if base is None:
        return _from_plain_rdf(triples, name=name)
    return _KgprobeLayout(triples, base).knowledge_graph()


def _kgprobe_base(triples: list[tuple]) -> str | None:
    """The base IRI of a kgprobe-written graph, found from its ``kgp:Graph`` node."""
    for _, p, o in triples:
        if p == RDF_TYPE and isinstance(o, str) and o.endswith("schema#Graph"):
            return o[: -len("schema#Graph")]
    return None


def _local_id(node: Any, prefix: str) -> str:
    """The id quoted into ``node`` by the writer, or the whole IRI (or blank node) for a foreign node."""
    text = _text(node)
    return unquote(text[len(prefix):]) if text.startswith(prefix) else text


class _KgprobeLayout:
    """Reads back the layout :func:`rdf_lines` writes, in one pass over the triples."""

    def __init__(self, triples: list[tuple], base: str):
        self.base = base
        kgp = base + "schema#"
        self.graph_type, self.entity_type, self.relation_type = kgp + "Graph", kgp + "Entity", kgp + "Relation"
        self.index, self.score, self.provenance = kgp + "index", kgp + "score", kgp + "provenance"
        self.has_scores, self.has_provenance = kgp + "hasScores", kgp + "hasProvenance"
        self.typed: dict[str, list] = {t: [] for t in (self.graph_type, self.entity_type,
                                                        self.relation_type, RDF_STATEMENT)}
        # predicate -> {subject: object}; a later value for the same subject wins
        self.values: dict[str, dict] = {p: {} for p in (
            RDFS_LABEL, DCTERMS_DESCRIPTION, self.index, self.score, self.provenance, self.has_scores,
            self.has_provenance, RDF_SUBJECT, RDF_PREDICATE, RDF_OBJECT)}
        self.others: list[tuple] = []
        for s, p, o in triples:
            if p == RDF_TYPE:
                if o in self.typed:
                    self.typed[o].append(s)
            elif p in self.values:
                self.values[p][s] = o
            else:
                self.others.append((s, p, o))

    def knowledge_graph(self) -> KnowledgeGraph:
        labels, descriptions = self.values[RDFS_LABEL], self.values[DCTERMS_DESCRIPTION]
        entities = self._in_index_order(self.typed[self.entity_type])
        relations = self._in_index_order(self.typed[self.relation_type])
        statements = self._in_index_order(self.typed[RDF_STATEMENT])
        e_pos = {node: i for i, node in enumerate(entities)}
        r_pos = {node: i for i, node in enumerate(relations)}
        rows = [(self._position(st, RDF_SUBJECT, e_pos, "kgp:Entity"),
                 self._position(st, RDF_PREDICATE, r_pos, "kgp:Relation"),
                 self._position(st, RDF_OBJECT, e_pos, "kgp:Entity")) for st in statements]
        self._check_all_reified(rows, entities, relations)

        graph_node = self.typed[self.graph_type][0]
        scores = self._optional_column(statements, self.score, self.has_scores, graph_node)
        entity_ids = [_local_id(e, self.base + "entity/") for e in entities]
        relation_ids = [_local_id(r, self.base + "relation/") for r in relations]
        return KnowledgeGraph(
            entity_ids=entity_ids,
            relation_ids=relation_ids,
            triples=torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
            entity_labels=[_text(labels[e]) if e in labels else i for e, i in zip(entities, entity_ids)],
            entity_descriptions=[_text(descriptions.get(e, "")) for e in entities],
            relation_labels=[_text(labels[r]) if r in labels else i for r, i in zip(relations, relation_ids)],
            scores=None if scores is None else torch.tensor(
                [self._score(st, v) for st, v in zip(statements, scores)], dtype=torch.float32),
            provenance=self._optional_column(statements, self.provenance, self.has_provenance, graph_node,
                                             as_text=True),
            name=_text(labels[graph_node]) if graph_node in labels else "kg",
        )

    def _in_index_order(self, nodes: Iterable) -> list:
        index = self.values[self.index]

        def key(node):
            value = index.get(node)
            number = _integer(value)
            if value is not None and number is None:
                raise KgprobeError(f"{_n3(node)} has kgp:index {_n3(value)}, which is not an integer")
            # Nodes someone added by hand without an index go last, in a stable order.
            return (0, number, "") if value is not None else (1, 0, _n3(node))

        return sorted(dict.fromkeys(nodes), key=key)

    def _position(self, statement, predicate: str, positions: dict, what: str) -> int:
        node = self.values[predicate].get(statement)
        if node is None:
            raise KgprobeError(f"statement {_n3(statement)} has no {_n3(predicate)}")
        if node not in positions:
            raise KgprobeError(f"statement {_n3(statement)} refers to {_n3(node)}, which is not a {what}")
        return positions[node]

    def _check_all_reified(self, rows: list, entities: list, relations: list) -> None:
        # A triple added to the file by hand has no position; refuse rather than drop it.
        reified = {(entities[h], relations[r], entities[t]) for h, r, t in rows}
        relation_set = set(relations)
        for s, p, o in self.others:
            if p in relation_set and (s, p, o) not in reified:
                raise KgprobeError(
                    f"triple {_n3(s)} {_n3(p)} {_n3(o)} has no reified rdf:Statement, so its place in "
                    "the kgprobe graph is unknown; remove the kgp:Graph node to read the file as plain RDF")

    def _optional_column(self, statements: list, predicate: str, flag_predicate: str, graph_node,
                         *, as_text: bool = False) -> list | None:
        """Per-statement values of ``predicate``: all of them, or None when the graph has none."""
        found = self.values[predicate]
        declared = _is_true(self.values[flag_predicate].get(graph_node))
        if not (declared or any(st in found for st in statements)):
            return None
        missing = next((st for st in statements if st not in found), None)
        if missing is not None:
            raise KgprobeError(f"statement {_n3(missing)} has no {_n3(predicate)}, but other statements "
                               "(or the kgp:Graph node) say the graph has them")
        return [_text(found[st]) if as_text else found[st] for st in statements]

    @staticmethod
    def _score(statement, literal) -> float:
        value = _number(literal)
        if value is None:
            raise KgprobeError(f"statement {_n3(statement)} has score {_n3(literal)}, which is not a number")
        return value


def _from_plain_rdf(triples: list[tuple], *, name: str) -> KnowledgeGraph:
    """Any RDF: triples between IRIs become KG triples, ordered by their IRIs."""
    labels: dict[str, tuple] = {}
    descriptions: dict[str, tuple] = {}
    kept: list[tuple[str, str, str]] = []
    for s, p, o in triples:
        if isinstance(o, _Literal):
            _keep_best(labels, s, p, o, _LABEL_PREDICATES)
            _keep_best(descriptions, s, p, o, _DESCRIPTION_PREDICATES)
        elif isinstance(s, str) and isinstance(o, str) and p not in _NON_RELATIONS and not p.startswith(RDF):
            kept.append((s, p, o))
    # A file may state a triple twice, but RDF is a set; and the parse order is the parser's business.
    kept = sorted(set(kept))
    entities = dict.fromkeys(x for h, _, t in kept for x in (h, t))
    relations = dict.fromkeys(r for _, r, _ in kept)
    return KnowledgeGraph.from_labeled_triples(
        kept,
        entity_labels={e: labels[e][-1] if e in labels else e for e in entities},
        entity_descriptions={e: descriptions[e][-1] if e in descriptions else "" for e in entities},
        relation_labels={r: labels[r][-1] if r in labels else r for r in relations},
        name=name,
    )


def _keep_best(table: dict[str, tuple], subject: Any, predicate: str, literal: _Literal,
               predicates: tuple) -> None:
    """Keep one literal per subject: preferred predicate, then untagged/English, then text order."""
    if predicate not in predicates or not isinstance(subject, str):
        return
    language = literal.language.lower()
    rank = (predicates.index(predicate), 0 if not language else 1 if language.startswith("en") else 2,
            literal.lexical)
    if subject not in table or rank < table[subject]:
        table[subject] = rank
