# Entry points; CMake does the building underneath.
#   make        build the library, the CLI and the tests into build/
#   make run    build, then benchmark the built-in ResNet-50 (the main job)
#   make test   build, then run every test: C tests (also under ASan and
#               UBSan) and the Python tests against PyTorch and numpy
# Missing Debian packages are installed first when run as root.

BUILD ?= build
SAN_BUILD ?= build-sanitize
PYTHON ?= /usr/bin/python3
JOBS ?= $(shell nproc)
PYTEST_ARGS ?=

.PHONY: all build sanitize run test test-c test-python deps-build deps-test clean

all: build

deps-build:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

build: deps-build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

sanitize: deps-build
	cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTSR_SANITIZE=ON
	cmake --build $(SAN_BUILD) -j$(JOBS)

run: build
	$(BUILD)/bin/tessera bench

test: deps-test build sanitize
	$(MAKE) --no-print-directory test-c test-python

test-c:
	ctest --test-dir $(BUILD) --output-on-failure
	ctest --test-dir $(SAN_BUILD) --output-on-failure

# The Python tests run twice: on the release build, then (all but the
# whole-model tests, which are too slow there) on the sanitizer build, with
# the ASan runtime preloaded so the ctypes-loaded library can use it;
# libstdc++ is preloaded too, or ASan cannot intercept the C++ exceptions
# that PyTorch throws inside torch.onnx.export.
test-python:
	TESSERA_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/python $(PYTEST_ARGS)
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libstdc++.so.6)" \
	  ASAN_OPTIONS=detect_leaks=0 \
	  TESSERA_BUILD_DIR=$(abspath $(BUILD)) \
	  TESSERA_LIB=$(abspath $(SAN_BUILD))/lib/libtessera.so \
	  TESSERA_BIN=$(abspath $(SAN_BUILD))/bin/tessera \
	  $(PYTHON) -m pytest -q -m "not models" tests/python $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
