import os
from pathlib import Path

import pytest

# Tests never wait on a model hub; the default models come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_bench(name: str):
    """An ``eval/NAME.py`` benchmark script as a module (eval/ on the path for its own imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    eval_dir = Path(__file__).resolve().parent.parent / "eval"
    sys.path.insert(0, str(eval_dir))
    spec = importlib.util.spec_from_file_location(name, eval_dir / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    """UMLS with a BLP inductive split, as `kgprobe data build umls --inductive` writes it (~2 s)."""
    from kgprobe.cli import main

    out = tmp_path_factory.mktemp("data") / "umls"
    with pytest.raises(SystemExit) as exc:
        main(["data", "build", "umls", "--inductive", "--out", str(out)])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT with a 20-word vocabulary, saved like a user's local masked LM."""
    from tiny_models import save_tiny_masked_lm

    return save_tiny_masked_lm(tmp_path_factory.mktemp("tiny_bert"))
