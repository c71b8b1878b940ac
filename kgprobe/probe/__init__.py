"""Probe parametric knowledge: hook points, value vectors, the logit lens and the value-vector scan."""
from kgprobe.probe.hooks import (
    HOOK_POINTS,
    Arch,
    all_value_vectors,
    arch_of,
    capture,
    damage_value_vectors,
    edit,
    hook_names,
    logit_lens,
    set_value_vector,
    value_vectors,
)
from kgprobe.probe.scan import (
    ScanResult,
    bare_matmul_seconds,
    concept_scores,
    membership_matrix,
    rank_weights,
    scan_value_vectors,
    top_candidates,
)

__all__ = [
    "HOOK_POINTS", "Arch", "all_value_vectors", "arch_of", "capture", "damage_value_vectors", "edit", "hook_names",
    "logit_lens", "set_value_vector", "value_vectors",
    "ScanResult", "bare_matmul_seconds", "concept_scores", "membership_matrix", "rank_weights", "scan_value_vectors",
    "top_candidates",
]
