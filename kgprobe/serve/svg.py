"""Geometry of the drawings the pages make (a histogram, a neighbourhood graph): numbers only; the
templates turn them into SVG elements, so every label passes Jinja2's escaping."""
from __future__ import annotations

import math
from typing import Sequence


def histogram(values: Sequence[float | None], *, bins: int = 20, width: int = 600, height: int = 160,
              marker: float | None = None) -> dict | None:
    """Bars of equal-width bins over ``values`` (None and non-finite values left out) in a
    ``width`` x ``height`` box with a 20 px margin below for the axis labels; ``marker``: an x
    position to draw a line at (e.g. the observed effect against a null distribution)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    points = xs + ([marker] if marker is not None and math.isfinite(marker) else [])
    lo, hi = min(points), max(points)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = (hi - lo) / bins
    counts = [0] * bins
    for x in xs:
        counts[min(int((x - lo) / step), bins - 1)] += 1
    plot_h, bar_w, top = height - 20, width / bins, max(counts)
    bars = [{"x": round(i * bar_w, 2), "y": round(plot_h - c / top * plot_h, 2), "w": round(bar_w - 1, 2),
             "h": round(c / top * plot_h, 2), "lo": round(lo + i * step, 4), "hi": round(lo + (i + 1) * step, 4),
             "count": c} for i, c in enumerate(counts)]
    mark = None if marker is None or not math.isfinite(marker) else round((marker - lo) / (hi - lo) * width, 2)
    return {"width": width, "height": height, "plot_height": plot_h, "bars": bars, "lo": round(lo, 4),
            "hi": round(hi, 4), "n": len(xs), "max_count": top, "marker": mark, "marker_value": marker}


def neighbourhood(center: str, edges: Sequence[dict], *, size: int = 560, max_nodes: int = 40,
                  max_edge_labels: int = 12) -> dict:
    """A radial layout: ``center`` in the middle, its neighbours (at most ``max_nodes``) on a circle,
    one line per neighbour. ``edges``: ``{"other" (an id), "label", "relation", "direction":
    "out"|"in"}``; a neighbour's line carries all its relations (drawn as text when there are at
    most ``max_edge_labels`` neighbours, else as the line's tooltip)."""
    grouped: dict[str, dict] = {}
    for e in edges:
        g = grouped.setdefault(e["other"], {"id": e["other"], "label": e.get("label") or e["other"],
                                            "relations": [], "directions": set()})
        g["relations"].append(("→ " if e["direction"] == "out" else "← ") + e["relation"])
        g["directions"].add(e["direction"])
    shown = list(grouped.values())[:max_nodes]
    c = size / 2
    radius = c - 80
    nodes = [{"id": center, "label": center, "x": c, "y": c, "center": True}]
    lines = []
    for i, g in enumerate(shown):
        angle = 2 * math.pi * i / max(len(shown), 1) - math.pi / 2
        x, y = round(c + radius * math.cos(angle), 1), round(c + radius * math.sin(angle), 1)
        # labels alternate between two distances from their node, so neighbours' labels overlap less
        nodes.append({"id": g["id"], "label": g["label"], "x": x, "y": y, "center": False,
                      "ly": round(y + (16 if y >= c else -10) + (10 if i % 2 and len(shown) > 16 else 0), 1)})
        direction = "both" if len(g["directions"]) > 1 else next(iter(g["directions"]))
        x1, y1, x2, y2 = (x, y, c, c) if direction == "in" else (c, c, x, y)
        lines.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "lx": round((c + x) / 2, 1), "ly": round((c + y) / 2, 1),
                      "relations": g["relations"], "direction": direction})
    return {"size": size, "nodes": nodes, "edges": lines, "shown": len(shown), "hidden": len(grouped) - len(shown),
            "edge_labels": len(shown) <= max_edge_labels}
