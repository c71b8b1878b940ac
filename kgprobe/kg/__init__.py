"""Knowledge graphs: the :class:`KnowledgeGraph` data type and its file formats."""
from kgprobe.kg.formats import FORMATS, format_for, from_networkx, load_kg, save_kg, to_networkx
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.sources import DATASET_PREFIX, convert_kg, load_kg_source

__all__ = ["KnowledgeGraph", "FORMATS", "DATASET_PREFIX", "convert_kg", "format_for", "load_kg", "load_kg_source",
           "save_kg", "to_networkx", "from_networkx"]
