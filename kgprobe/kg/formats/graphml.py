"""GraphML through networkx, for Gephi, Cytoscape, yEd and friends.

:func:`to_networkx` turns a graph into a ``networkx.MultiDiGraph``:

* one node per entity, keyed by its id, with attributes ``label``, ``description``, ``index``;
* one edge per triple, keyed by the relation id, with attributes ``relation``,
  ``relation_label``, ``index`` and, when the graph has them, ``score`` and ``provenance``;
* graph attributes ``name``, ``relations`` (a JSON list of ``[id, label]`` pairs, so relations
  without edges survive), ``has_scores`` and ``has_provenance``.

:func:`from_networkx` reverses it and also accepts plain networkx graphs (see its docstring).
"""
from __future__ import annotations

import io
import json
import re
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Iterable

import networkx as nx
import torch
from networkx.readwrite.graphml import GraphMLWriter

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats.tsv import META_FORMAT, META_VERSION, score_strings, shorten
from kgprobe.kg.graph import KnowledgeGraph

DEFAULT_RELATION = "related_to"

# Characters XML 1.0 cannot hold at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def to_networkx(kg: KnowledgeGraph) -> nx.MultiDiGraph:
    """The graph as a ``networkx.MultiDiGraph`` (layout in the module docstring).

    A repeated triple cannot reuse its relation id as edge key, so the second copy is keyed
    ``"<relation>@<index>"``; its ``relation`` attribute stays the plain id.
    """
    graph = nx.MultiDiGraph(
        name=kg.name, format=META_FORMAT, version=META_VERSION,
        relations=json.dumps([list(pair) for pair in zip(kg.relation_ids, kg.relation_labels)],
                             ensure_ascii=False),
        has_scores=kg.scores is not None, has_provenance=kg.provenance is not None,
    )
    graph.add_nodes_from(
        (e, {"label": label, "description": description, "index": i})
        for i, (e, label, description) in enumerate(zip(kg.entity_ids, kg.entity_labels, kg.entity_descriptions)))
    e_ids, r_ids, r_labels = kg.entity_ids, kg.relation_ids, kg.relation_labels
    scores = None if kg.scores is None else [float(s) for s in score_strings(kg.scores)]
    for i, (h, r, t) in enumerate(kg.triples.tolist()):
        attributes: dict[str, Any] = {"relation": r_ids[r], "relation_label": r_labels[r], "index": i}
        if scores is not None:
            attributes["score"] = scores[i]
        if kg.provenance is not None:
            attributes["provenance"] = kg.provenance[i]
        key = r_ids[r]
        if graph.has_edge(e_ids[h], e_ids[t], key):
            key = f"{key}@{i}"
        graph.add_edge(e_ids[h], e_ids[t], key=key, **attributes)
    return graph


def from_networkx(graph: nx.Graph, *, name: str | None = None) -> KnowledgeGraph:
    """A knowledge graph from any networkx graph; lossless for :func:`to_networkx` output.

    Node ids become entity ids (as strings); ``label`` and ``description`` node attributes are
    used when present. The relation of an edge is its ``relation`` attribute, else its ``label``
    attribute, else ``"related_to"``. Nodes and edges keep networkx's order unless all of them
    carry an integer ``index``. Scores / provenance come from ``score`` / ``provenance`` edge
    attributes, which every edge must have if any has. ``name`` defaults to the graph's
    ``name`` attribute.
    """
    nodes = _in_index_order(list(graph.nodes(data=True)))
    entity_ids = [str(node) for node, _ in nodes]
    if len(set(entity_ids)) != len(entity_ids):
        raise KgprobeError("two nodes have the same id once written as text")
    entities = {node: i for i, (node, _) in enumerate(nodes)}

    relations, relation_labels = _relation_table(graph.graph.get("relations"))
    edges = _in_index_order([(u, v, data) for u, v, data in graph.edges(data=True)])
    rows = []
    for u, v, data in edges:
        relation = str(data.get("relation", data.get("label", DEFAULT_RELATION)))
        if relation not in relations:
            relations[relation] = len(relations)
            relation_labels.append(str(data.get("relation_label", relation)))
        rows.append((entities[u], relations[relation], entities[v]))

    scores = _optional_column(edges, "score", graph.graph.get("has_scores"))
    provenance = _optional_column(edges, "provenance", graph.graph.get("has_provenance"))
    return KnowledgeGraph(
        entity_ids=entity_ids,
        relation_ids=list(relations),
        triples=torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
        entity_labels=[str(data.get("label", e)) for e, (_, data) in zip(entity_ids, nodes)],
        entity_descriptions=[str(data.get("description", "")) for _, data in nodes],
        relation_labels=relation_labels,
        scores=None if scores is None else torch.tensor([_number(s) for s in scores], dtype=torch.float32),
        provenance=None if provenance is None else [str(p) for p in provenance],
        name=name if name is not None else str(graph.graph.get("name", "kg")),
    )


def _in_index_order(items: list[tuple]) -> list[tuple]:
    """Sort nodes / edges (attribute dict last) by their ``index`` when all have an integer one."""
    indexes = [item[-1].get("index") for item in items]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indexes):
        return items
    return [item for _, item in sorted(zip(indexes, items), key=lambda pair: pair[0])]


def _relation_table(text: Any) -> tuple[dict[str, int], list[str]]:
    """Relation ids -> position and labels from the ``relations`` graph attribute, if any."""
    if text is None:
        return {}, []
    try:
        pairs = json.loads(text)
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
            raise ValueError
    except (TypeError, ValueError, RecursionError):
        raise KgprobeError("graph attribute 'relations' is not a JSON list of [id, label] pairs") from None
    relations: dict[str, int] = {}
    for relation, _ in pairs:
        if relation in relations:
            raise KgprobeError(f"graph attribute 'relations' lists relation id {shorten(relation)} twice")
        relations[relation] = len(relations)
    return relations, [label for _, label in pairs]


def _optional_column(edges: list[tuple], key: str, declared: Any) -> list | None:
    """The ``key`` attribute of every edge, or None when no edge has it (and none is declared)."""
    if not (declared is True or any(key in data for _, _, data in edges)):
        return None
    for u, v, data in edges:
        if key not in data:
            raise KgprobeError(f"edge {shorten(u)} -> {shorten(v)} has no {key!r} attribute, but other edges "
                               "(or the graph attributes) say the graph has them")
    return [data[key] for _, _, data in edges]


def _number(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range (GraphML 'long' has no bound in networkx)
        return float("inf") if value > 0 else float("-inf")
    except (TypeError, ValueError):
        raise KgprobeError(f"edge score {shorten(value)} is not a number") from None


# --------------------------------------------------------------------------- files
def save_graphml(kg: KnowledgeGraph, target: str | Path) -> Path:
    """Write ``kg`` as GraphML through a temporary file."""
    target = Path(target)
    _check_xml_text(kg)
    writer = GraphMLWriter(encoding="utf-8", prettyprint=True)
    writer.add_graph_element(to_networkx(kg))
    buffer = io.BytesIO()
    writer.dump(buffer)
    # ElementTree writes a carriage return in element text as is, and XML readers turn it into
    # a newline; a character reference survives. Byte 0x0D is always '\r' in UTF-8.
    data = buffer.getvalue().replace(b"\r", b"&#13;")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def _check_xml_text(kg: KnowledgeGraph) -> None:
    fields: Iterable[tuple[str, Iterable[str]]] = (
        ("entity id", kg.entity_ids), ("entity label", kg.entity_labels),
        ("entity description", kg.entity_descriptions), ("relation id", kg.relation_ids),
        ("relation label", kg.relation_labels), ("provenance", kg.provenance or ()), ("name", (kg.name,)),
    )
    for what, texts in fields:
        for text in texts:
            bad = _NOT_XML.search(text)
            if bad:
                raise KgprobeError(f"{what} {shorten(text)} contains U+{ord(bad.group()):04X}, which GraphML (XML) "
                                   "cannot hold; save as a KG directory or .jsonl instead")


def load_graphml(path: str | Path) -> KnowledgeGraph:
    """Read a GraphML file (kgprobe-written or any other) via :func:`from_networkx`."""
    path = Path(path)
    if path.stat().st_size < 4096 and not path.read_bytes().strip():
        # An empty file is an empty graph, as in the other formats (load_kg warns about it).
        return KnowledgeGraph(entity_ids=[], relation_ids=[], triples=torch.zeros(0, 3), name=path.stem)
    try:
        with warnings.catch_warnings():
            # networkx warns (on the user's stderr) about keys without attr.type and reads them as text
            warnings.simplefilter("ignore")
            graph = nx.read_graphml(path, force_multigraph=True)
    except OSError:
        raise
    except ElementTree.ParseError as err:
        raise KgprobeError(f"not valid XML: {err}", path=path, line=err.position[0]) from None
    except Exception as err:  # networkx reports GraphML problems with assorted exception types
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise KgprobeError(f"cannot read as GraphML: {detail}", path=path) from None
    try:
        return from_networkx(graph, name=str(graph.graph.get("name", path.stem)))
    except KgprobeError as err:
        raise KgprobeError(str(err), path=path) from None
