"""Knowledge graphs: the :class:`KnowledgeGraph` data type and its file formats."""
from kgprobe.kg.formats import FORMATS, format_for, from_networkx, load_kg, save_kg, to_networkx
from kgprobe.kg.graph import KnowledgeGraph

__all__ = ["KnowledgeGraph", "FORMATS", "format_for", "load_kg", "save_kg", "to_networkx", "from_networkx"]
