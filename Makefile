# Two commands do all the set-up: `make demo` and `make test`. Both create .venv if absent and install the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Without a GPU the CPU build of torch is enough (and on this project's machines it is on disk); with one, let pip
# pick torch as the package metadata allows. Override with `make TORCH_SPEC=... test`.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)
PYTEST_ARGS ?=

.PHONY: demo test venv bench sanitize clean

$(VENV)/.installed: pyproject.toml setup.py Makefile csrc/*.cpp csrc/*.h
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/t2arec demo

test: venv
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

bench: venv
	$(PY) bench/run_all.py

sanitize:
	$(MAKE) -C csrc sanitize

clean:
	rm -rf build dist *.egg-info $(VENV) t2arec_fast/*.so
