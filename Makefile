# Two commands do all the set-up: `make demo` and `make test`. Both create .venv if absent and install the package.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Without a GPU the CPU build of torch is enough (and on this project's machines it is on disk); with one, let pip
# pick torch as the package metadata allows. Override with `make TORCH_SPEC=... test`.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)
PYTEST_ARGS ?=
# The Redis state-store tests start their own server (tests/redis_server.py). It comes from the operating system's
# package: real Redis with the distribution's security updates; no maintained PyPI wheel ships one (docs/serving.md).
REDIS_SERVER ?= redis-server
BENCH_ARGS ?=

.PHONY: demo test venv wheel-check bench sanitize clean redis-server

$(VENV)/.installed: pyproject.toml setup.py Makefile csrc/*.cpp csrc/*.h
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/t2arec demo

test: venv redis-server
	REDIS_SERVER=$(REDIS_SERVER) $(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

redis-server:
	@command -v $(REDIS_SERVER) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; \
	  else \
	    echo "redis-server is not installed and this is not a root Debian/Ubuntu shell: install Redis >= 6.2" \
	         "(apt-get install redis-server, dnf install redis, brew install redis) or set REDIS_SERVER=/path/to/it" >&2; \
	    exit 1; \
	  fi; }

# sdist -> wheel (from the sdist) -> fresh venv -> `t2arec demo` outside the checkout: what `pip install` users get
wheel-check: venv
	PYTHON=$(PY) TORCH_SPEC="$(TORCH_SPEC)" .ci/check_wheel.sh

# every benchmark at a small size (bench/run.py); `make bench BENCH_ARGS="--only train --full"` for one at full size
bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

sanitize:
	$(MAKE) -C csrc sanitize

clean:
	rm -rf build dist *.egg-info $(VENV) t2arec_fast/*.so
