# Two commands for a newcomer: `make test` and `make demo`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out
DEMO_SIZE ?= small
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install bench bench-demo clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that pip never resolves the multi-GB CUDA build on a CPU machine.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/videobert demo --out $(DEMO_OUT) --size $(DEMO_SIZE)

# Stand-alone benchmarks; bench-demo runs those that read a finished `make demo` ($(DEMO_OUT)/work and /model).
bench: $(STAMP)
	for b in decode extract kmeans pretrain text_vocab; do $(PY) benchmarks/$$b.py || exit 1; done

bench-demo: $(STAMP)
	$(PY) benchmarks/alignment_probe.py $(DEMO_OUT)/work $(DEMO_OUT)/model
	$(PY) benchmarks/clip_length.py $(DEMO_OUT)/work
	$(PY) benchmarks/captioning.py $(DEMO_OUT)/model $(DEMO_OUT)/work

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info src/*.egg-info
