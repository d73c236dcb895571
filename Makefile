# Two entry points for a new user: `make demo` and `make test`.
# Everything else here is what those two need: the virtual env, the system
# packages the tests drive (Debian's adb, qemu-user, the aarch64 cross
# compiler and clang), and the C++ delegate build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BUILD := build/delegates
DELEGATE := $(BUILD)/libwbmm_delegate.so
APT_PACKAGES := adb qemu-user g++-aarch64-linux-gnu clang cmake make g++
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test test-fast setup system-deps delegate delegate-arm64 delegate-arm64-test delegate-arm64-clang-test clean help

help:
	@echo "make demo   set up .venv, build the delegate, convert, profile (phone or loopback ADB) and compare the built-in example"
	@echo "make test   set up everything the tests need, then run the whole test suite"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# SKIP_SDK_DOWNLOAD=1: the npu extra's ai-edge-litert-sdk-qualcomm downloads Qualcomm's SDK
	@# while it builds unless this is set; the extra itself cannot set it (docs/USAGE.md).
	SKIP_SDK_DOWNLOAD=1 $(PY) -m pip install --quiet -e '.[test,npu]'
	@touch $(STAMP)

setup: $(STAMP)

# Installs only what is missing; needs root (CI and these machines run as root).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(DELEGATE): $(wildcard delegates/*.cc delegates/*.h delegates/CMakeLists.txt delegates/kernels/* delegates/tests/* delegates/bench/* delegates/cmake/*)
	cmake -S delegates -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

delegate: $(DELEGATE)

# The delegate for Android phones (arm64-v8a, API 26+), with the NDK's CMake toolchain.
# The aarch64 build below links glibc and does not load on Android: use this one on phones.
ANDROID_NDK_HOME ?=
BUILD_ANDROID := build/android-arm64
delegate-arm64:
	@test -n "$(ANDROID_NDK_HOME)" -a -f "$(ANDROID_NDK_HOME)/build/cmake/android.toolchain.cmake" || \
	  { echo "make delegate-arm64 needs ANDROID_NDK_HOME=<Android NDK r23 or newer>"; exit 2; }
	cmake -S delegates -B $(BUILD_ANDROID) -DCMAKE_BUILD_TYPE=Release -DWBMM_BUILD_TESTS=OFF \
	  -DCMAKE_TOOLCHAIN_FILE=$(ANDROID_NDK_HOME)/build/cmake/android.toolchain.cmake \
	  -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-26 >/dev/null
	cmake --build $(BUILD_ANDROID) -j $(JOBS) --target wbmm_delegate wbmm_kernel_bench
	@echo "built $(BUILD_ANDROID)/libwbmm_delegate.so and $(BUILD_ANDROID)/wbmm_kernel_bench"

# The arm64 (NEON) kernels and their C++ unit tests, cross-compiled and run under
# qemu-user: how CI proves the phone code path. delegate-arm64-test builds with
# Debian's aarch64-linux-gnu-g++, delegate-arm64-clang-test with clang (the
# NDK's compiler family) against the same cross headers and libraries. qemu's
# default CPU has the dot-product extension (the int8 kernels take sdot); the
# int8 tests run again as a Cortex-A53, which lacks it (the plain NEON path).
BUILD_ARM64 := build/delegates-arm64
BUILD_ARM64_CLANG := build/delegates-arm64-clang
define arm64_test
	cmake -S delegates -B $(1) -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/delegates/cmake/$(2) >/dev/null
	cmake --build $(1) -j $(JOBS) --target wbmm_kernel_tests wbmm_delegate wbmm_kernel_bench
	qemu-aarch64 -L /usr/aarch64-linux-gnu $(1)/wbmm_kernel_tests
	QEMU_CPU=cortex-a53 qemu-aarch64 -L /usr/aarch64-linux-gnu $(1)/wbmm_kernel_tests Int8
endef
delegate-arm64-test:
	$(call arm64_test,$(BUILD_ARM64),aarch64-linux-gnu.cmake)
delegate-arm64-clang-test:
	$(call arm64_test,$(BUILD_ARM64_CLANG),aarch64-linux-gnu-clang.cmake)

demo: $(STAMP) delegate
	$(VENV)/bin/wbmm-mobile demo --out results/demo $(DEMO_ARGS)

test: $(STAMP) system-deps delegate
	$(PY) -m pytest -q

# For contributors: the tests that need no C++ build, no qemu and no apt, and are not slow
# (about a minute on 2 cores). Tests are put in tiers automatically: see tests/conftest.py.
test-fast: $(STAMP)
	WBMM_TEST_FAST=1 $(PY) -m pytest -q -m "not (toolchain or qemu or system or slow)"

clean:
	rm -rf build results .pytest_cache .hypothesis
