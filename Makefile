# Entry points; CMake does the building underneath.
#   make        build the library, the CLI and the tests into build/
#   make run    build, then benchmark the built-in ResNet-50 (the main job)
#   make test   build, then run every test: C tests (also under ASan and
#               UBSan), the Python tests against PyTorch and numpy, a
#               short run of every fuzz target, and the aarch64 cross
#               build's quick tests under qemu (test-short below)
#   make test-slow  the Python cases marked slow (model zoos, large sizes)
#   make cross-arm64       cross build for aarch64 into build-arm64/build
#   make test-cross-arm64  that build's C tests and the op x backend
#               harness under qemu: NEON and SVE at 128, 256 and 512 bits
#               (docs/arm64.md)
#   make fuzz   build the libFuzzer targets (clang, ASan, UBSan) into
#               build-fuzz/ and run each for FUZZ_SECONDS (docs/fuzzing.md)
# Missing Debian packages are installed first when run as root.

BUILD ?= build
SAN_BUILD ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 30
# make test fuzzes each target this long (CI keeps the whole suite under 20 minutes).
TEST_FUZZ_SECONDS ?= 15
FUZZ_TARGETS ?=
PYTHON ?= /usr/bin/python3
JOBS ?= $(shell nproc)
PYTEST_ARGS ?=

.PHONY: all build sanitize fuzz-build fuzz run cross-arm64 test-cross-arm64 test test-slow test-c test-python test-fuzz deps-build deps-test deps-fuzz clean

all: build

deps-build:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

deps-fuzz:
	@scripts/install-deps.sh fuzz

build: deps-build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

sanitize: deps-build
	cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTSR_SANITIZE=ON
	cmake --build $(SAN_BUILD) -j$(JOBS)

# The fuzz targets and their seed corpora; -O1 keeps ASan builds fast (and
# leaves the `omp simd` loops unvectorized, which clang would warn about).
fuzz-build: deps-fuzz
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS_DEBUG="-g -O1 -Wno-pass-failed" -DTSR_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target tsr_fuzz

fuzz: fuzz-build
	$(MAKE) --no-print-directory test-fuzz

cross-arm64:
	scripts/cross-arm64.sh build

test-cross-arm64:
	scripts/cross-arm64.sh test
	scripts/cross-arm64.sh test-python

run: build
	$(BUILD)/bin/tessera bench

test: deps-test build sanitize fuzz-build
	$(MAKE) --no-print-directory test-c test-python
	$(MAKE) --no-print-directory test-fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	scripts/cross-arm64.sh test-short

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

# The cases marked slow (model zoos, large sizes), on the release build.
test-slow: deps-test build
	TESSERA_SLOW=1 TESSERA_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -m slow tests/python $(PYTEST_ARGS)

test-fuzz:
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(JOBS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD)
