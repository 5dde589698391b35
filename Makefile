# deepvisor: `make` builds and makes the package importable; `make demo` and
# `make test` also install whatever is missing first.
PYTHON ?= python3
BUILD ?= build
MESON ?= $(PYTHON) -m mesonbuild.mesonmain
export PYTHONUNBUFFERED = 1

.PHONY: all deps build demo test test-cpp test-python test-gpu bench clean

all: build

deps:
	@tools/setup-deps.sh $(PYTHON)

build:
	@if [ ! -f $(BUILD)/build.ninja ]; then $(MESON) setup $(BUILD) -Dpython=$(PYTHON); fi
	$(MESON) compile -C $(BUILD)
	@$(PYTHON) tools/link-package.py $(BUILD)

demo: deps build
	$(PYTHON) -m deepvisor.demo

test: deps build test-cpp test-python

test-cpp:
	$(MESON) test -C $(BUILD) --print-errorlogs

# The CPU suites; every generated kernel is also compiled by NVRTC for sm_90.
test-python:
	DEEPVISOR_VALIDATE_CUDA=1 DEEPVISOR_STRICT=1 $(PYTHON) -m pytest -q tests/python tests/gpu

# On a machine with a GPU: the GPU suite alone.
test-gpu: build
	DEEPVISOR_STRICT=1 $(PYTHON) -m pytest -q tests/gpu

bench: build
	$(PYTHON) bench/micro.py

clean:
	rm -rf $(BUILD) python/deepvisor/_C*.so
