"""kgprobe: knowledge graphs and the knowledge inside language models."""
__version__ = "0.1.0"
