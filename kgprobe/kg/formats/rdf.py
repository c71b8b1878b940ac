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
are read with rdflib's parsers into a plain list (again skipping the store).

Any other RDF file is read as a plain graph: every triple between two IRIs whose predicate is
not RDF/RDFS bookkeeping becomes a KG triple, ordered by IRI; ids are the full IRIs; labels and
descriptions come from ``rdfs:label`` / ``skos:prefLabel`` and ``dcterms:description`` /
``dc:description`` / ``skos:definition`` / ``rdfs:comment``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote, unquote

import torch
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DC, DCTERMS, OWL, RDF, RDFS, SKOS, XSD
from rdflib.store import Store

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats.tsv import META_FORMAT, META_VERSION, score_strings
from kgprobe.kg.graph import KnowledgeGraph

DEFAULT_BASE = "https://kgprobe.org/kg/"
RDF_FORMATS = {"turtle": "turtle", "ntriples": "nt"}  # kgprobe name -> rdflib parser name

# Predicates that describe nodes rather than relate them, skipped when reading foreign RDF
# (everything in the rdf: namespace is skipped too).
_NON_RELATIONS = frozenset({
    RDFS.label, RDFS.comment, RDFS.seeAlso, RDFS.isDefinedBy, RDFS.domain, RDFS.range,
    SKOS.prefLabel, SKOS.altLabel, SKOS.definition, DCTERMS.description, DC.description,
    OWL.imports,
})
_LABEL_PREDICATES = (RDFS.label, SKOS.prefLabel)  # in order of preference
_DESCRIPTION_PREDICATES = (DCTERMS.description, DC.description, SKOS.definition, RDFS.comment)


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
_STRING_ESCAPES = str.maketrans({
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
    **{chr(c): f"\\u{c:04X}" for c in range(0x20) if chr(c) not in "\n\r\t"},
})


class _Syntax:
    """Renders terms as N-Triples (full IRIs, typed literals) or Turtle (prefixed names)."""

    def __init__(self, base: str, *, turtle: bool):
        if _NOT_IN_IRI.search(base):
            raise KgprobeError(f"RDF base {base!r} contains a character an IRI cannot hold")
        self.turtle = turtle
        self.prefixes = {
            "rdf": str(RDF), "rdfs": str(RDFS), "xsd": str(XSD), "dcterms": str(DCTERMS),
            "kgp": base + "schema#", "entity": base + "entity/", "relation": base + "relation/",
            "triple": base + "triple/",
        }
        self.type = "a" if turtle else self.name("rdf", "type")
        self.graph_node = f"<{base}graph>"

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


def rdf_lines(kg: KnowledgeGraph, *, format: str = "turtle", base: str = DEFAULT_BASE) -> Iterator[str]:
    """The text of a Turtle or N-Triples file for ``kg``, in chunks."""
    _check_format(format)
    syntax = _Syntax(base, turtle=format == "turtle")
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


def to_rdf(kg: KnowledgeGraph, *, base: str = DEFAULT_BASE) -> Graph:
    """The same layout as an in-memory ``rdflib.Graph`` (for SPARQL and friends)."""
    return Graph().parse(data="".join(rdf_lines(kg, format="ntriples", base=base)), format="nt")


def _check_format(format: str) -> None:
    if format not in RDF_FORMATS:
        raise KgprobeError(f"unknown RDF format {format!r} (expected {' or '.join(RDF_FORMATS)})")


# --------------------------------------------------------------------------- reading
class _CollectingStore(Store):
    """An rdflib store that only collects parsed triples: no indexes, no duplicate checks."""

    def __init__(self) -> None:
        super().__init__()
        self.collected: list[tuple] = []

    def add(self, triple, context, quoted=False) -> None:
        self.collected.append(triple)


def load_rdf(path: str | Path, *, format: str = "turtle") -> KnowledgeGraph:
    """Read a Turtle / N-Triples file, kgprobe-written or not (see the module docstring)."""
    _check_format(format)
    path = Path(path)
    store = _CollectingStore()
    try:
        with open(path, "rb") as f:
            Graph(store=store).parse(f, format=RDF_FORMATS[format], publicID=path.resolve().as_uri())
    except OSError:
        raise
    except Exception as err:  # rdflib raises many unrelated types for bad input
        raise _parse_error(path, format, err) from None
    try:
        return _from_triples(store.collected, name=path.stem)
    except KgprobeError as err:
        raise KgprobeError(str(err), path=path) from None


def _parse_error(path: Path, format: str, err: Exception) -> KgprobeError:
    text = str(err)
    line = re.search(r"\bline (\d+)", text)
    reason = re.search(r"Bad syntax \(([^)]*)\)", text)
    detail = reason.group(1) if reason else (text.strip().splitlines() or [type(err).__name__])[0][:200]
    return KgprobeError(f"cannot parse as {format}: {detail}", path=path,
                        line=int(line.group(1)) if line else None)


def from_rdf(graph: Graph, *, name: str = "kg") -> KnowledgeGraph:
    """A knowledge graph from an rdflib graph (kgprobe's own layout, or any RDF)."""
    return _from_triples(list(graph), name=name)


def _from_triples(triples: list[tuple], *, name: str) -> KnowledgeGraph:
    base = _kgprobe_base(triples)
    if base is None:
        return _from_plain_rdf(triples, name=name)
    return _KgprobeLayout(triples, base).knowledge_graph()


def _kgprobe_base(triples: list[tuple]) -> str | None:
    """The base IRI of a kgprobe-written graph, found from its ``kgp:Graph`` node."""
    for _, p, o in triples:
        if p == RDF.type and isinstance(o, URIRef) and o.endswith("schema#Graph"):
            return str(o)[: -len("schema#Graph")]
    return None


def _local_id(node: Any, prefix: str) -> str:
    """The id quoted into ``node`` by the writer, or the whole IRI for a foreign node."""
    text = str(node)
    return unquote(text[len(prefix):]) if text.startswith(prefix) else text


class _KgprobeLayout:
    """Reads back the layout :func:`rdf_lines` writes, in one pass over the triples."""

    def __init__(self, triples: list[tuple], base: str):
        self.base = base
        kgp = Namespace(base + "schema#")  # item access: kgp.index would be str.index
        self.graph_type, self.entity_type, self.relation_type = kgp["Graph"], kgp["Entity"], kgp["Relation"]
        self.index, self.score, self.provenance = kgp["index"], kgp["score"], kgp["provenance"]
        self.has_scores, self.has_provenance = kgp["hasScores"], kgp["hasProvenance"]
        self.typed: dict[URIRef, list] = {t: [] for t in (self.graph_type, self.entity_type,
                                                           self.relation_type, RDF.Statement)}
        # predicate -> {subject: object}; a later value for the same subject wins
        self.values: dict[URIRef, dict] = {p: {} for p in (
            RDFS.label, DCTERMS.description, self.index, self.score, self.provenance, self.has_scores,
            self.has_provenance, RDF.subject, RDF.predicate, RDF.object)}
        self.others: list[tuple] = []
        for s, p, o in triples:
            if p == RDF.type:
                if o in self.typed:
                    self.typed[o].append(s)
            elif p in self.values:
                self.values[p][s] = o
            else:
                self.others.append((s, p, o))

    def knowledge_graph(self) -> KnowledgeGraph:
        labels, descriptions = self.values[RDFS.label], self.values[DCTERMS.description]
        entities = self._in_index_order(self.typed[self.entity_type])
        relations = self._in_index_order(self.typed[self.relation_type])
        statements = self._in_index_order(self.typed[RDF.Statement])
        e_pos = {node: i for i, node in enumerate(entities)}
        r_pos = {node: i for i, node in enumerate(relations)}
        rows = [(self._position(st, RDF.subject, e_pos, "kgp:Entity"),
                 self._position(st, RDF.predicate, r_pos, "kgp:Relation"),
                 self._position(st, RDF.object, e_pos, "kgp:Entity")) for st in statements]
        self._check_all_reified(rows, entities, relations)

        graph_node = self.typed[self.graph_type][0]
        scores = self._optional_column(statements, self.score, self.has_scores, graph_node)
        entity_ids = [_local_id(e, self.base + "entity/") for e in entities]
        relation_ids = [_local_id(r, self.base + "relation/") for r in relations]
        return KnowledgeGraph(
            entity_ids=entity_ids,
            relation_ids=relation_ids,
            triples=torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
            entity_labels=[str(labels.get(e, i)) for e, i in zip(entities, entity_ids)],
            entity_descriptions=[str(descriptions.get(e, "")) for e in entities],
            relation_labels=[str(labels.get(r, i)) for r, i in zip(relations, relation_ids)],
            scores=None if scores is None else torch.tensor(
                [self._number(st, v) for st, v in zip(statements, scores)], dtype=torch.float32),
            provenance=self._optional_column(statements, self.provenance, self.has_provenance, graph_node,
                                             as_text=True),
            name=str(labels.get(graph_node, "kg")),
        )

    def _in_index_order(self, nodes: Iterable) -> list:
        index = self.values[self.index]

        def key(node):
            value = index.get(node)
            number = value.toPython() if isinstance(value, Literal) else None
            if value is not None and (isinstance(number, bool) or not isinstance(number, int)):
                raise KgprobeError(f"{node.n3()} has kgp:index {value.n3()}, which is not an integer")
            # Nodes someone added by hand without an index go last, in a stable order.
            return (0, number, "") if value is not None else (1, 0, str(node))

        return sorted(dict.fromkeys(nodes), key=key)

    def _position(self, statement, predicate: URIRef, positions: dict, what: str) -> int:
        node = self.values[predicate].get(statement)
        if node is None:
            raise KgprobeError(f"statement {statement.n3()} has no {predicate.n3()}")
        if node not in positions:
            raise KgprobeError(f"statement {statement.n3()} refers to {node.n3()}, which is not a {what}")
        return positions[node]

    def _check_all_reified(self, rows: list, entities: list, relations: list) -> None:
        # A triple added to the file by hand has no position; refuse rather than drop it.
        reified = {(entities[h], relations[r], entities[t]) for h, r, t in rows}
        relation_set = set(relations)
        for s, p, o in self.others:
            if p in relation_set and (s, p, o) not in reified:
                raise KgprobeError(
                    f"triple {s.n3()} {p.n3()} {o.n3()} has no reified rdf:Statement, so its place in "
                    "the kgprobe graph is unknown; remove the kgp:Graph node to read the file as plain RDF")

    def _optional_column(self, statements: list, predicate: URIRef, flag_predicate: URIRef, graph_node,
                         *, as_text: bool = False) -> list | None:
        """Per-statement values of ``predicate``: all of them, or None when the graph has none."""
        found = self.values[predicate]
        flag = self.values[flag_predicate].get(graph_node)
        declared = flag.toPython() if isinstance(flag, Literal) else None
        if not (declared is True or any(st in found for st in statements)):
            return None
        missing = next((st for st in statements if st not in found), None)
        if missing is not None:
            raise KgprobeError(f"statement {missing.n3()} has no {predicate.n3()}, but other statements "
                               "(or the kgp:Graph node) say the graph has them")
        return [str(found[st]) if as_text else found[st] for st in statements]

    @staticmethod
    def _number(statement, literal) -> float:
        value = literal.toPython() if isinstance(literal, Literal) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KgprobeError(f"statement {statement.n3()} has score {literal.n3()}, which is not a number")
        return float(value)


def _from_plain_rdf(triples: list[tuple], *, name: str) -> KnowledgeGraph:
    """Any RDF: triples between IRIs become KG triples, ordered by their IRIs."""
    labels: dict[str, tuple] = {}
    descriptions: dict[str, tuple] = {}
    kept: list[tuple[str, str, str]] = []
    rdf_namespace = str(RDF)
    for s, p, o in triples:
        if isinstance(o, Literal):
            _keep_best(labels, s, p, o, _LABEL_PREDICATES)
            _keep_best(descriptions, s, p, o, _DESCRIPTION_PREDICATES)
        elif (isinstance(s, URIRef) and isinstance(o, URIRef) and p not in _NON_RELATIONS
              and not p.startswith(rdf_namespace)):
            kept.append((str(s), str(p), str(o)))
    # A file may state a triple twice, but RDF is a set; and the parse order is rdflib's business.
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


def _keep_best(table: dict[str, tuple], subject: Any, predicate: Any, literal: Literal,
               predicates: tuple) -> None:
    """Keep one literal per subject: preferred predicate, then untagged/English, then text order."""
    if predicate not in predicates or isinstance(subject, BNode):
        return
    language = (literal.language or "").lower()
    rank = (predicates.index(predicate), 0 if not language else 1 if language.startswith("en") else 2,
            str(literal))
    key = str(subject)
    if key not in table or rank < table[key]:
        table[key] = rank
