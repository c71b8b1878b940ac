"""Which text of an entity gets embedded: its label, its description, or both."""
from __future__ import annotations

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

TEXT_FIELDS = ("label", "description", "both")


def entity_texts(kg: KnowledgeGraph, text: str = "label") -> list[str]:
    """One string per entity, in ``kg.entity_ids`` order.

    ``label``: the label; ``description``: the description; ``both``: ``"label: description"``.
    An entity without a description falls back to its label (for ``description``) or to the
    label alone (for ``both``), so no entity is embedded from an empty string.
    """
    if text not in TEXT_FIELDS:
        raise KgprobeError(f"unknown text field {text!r}; choose one of: {', '.join(TEXT_FIELDS)}")
    out = []
    for label, desc in zip(kg.entity_labels, kg.entity_descriptions):
        label, desc = " ".join(label.split()), " ".join((desc or "").split())
        if text == "label" or not desc:
            out.append(label)
        elif text == "description":
            out.append(desc)
        else:
            out.append(f"{label}: {desc}")
    return out
