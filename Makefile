# Postern — build, run and test.
#
#   make run      install what is missing, build, and run Postern in the foreground
#                 with Deploy/postern.dev.conf, relaying to a capture upstream
#   make check    install what is missing, build both ways, run every test
#   make build    the release binary: the daemon's sources as Embedded Swift -> build/postern
#
# Every target that needs system packages installs the missing ones itself.

SHELL := /bin/bash
PY := /usr/bin/python3
SWIFT_FLAGS_EMBEDDED := -target x86_64-unknown-linux-gnu -enable-experimental-feature Embedded \
	-wmo -parse-as-library -Osize -Xfrontend -function-sections
RUNTIME_RESOURCES := $(shell swiftc -print-target-info 2>/dev/null | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')
EMBEDDED_LIBS := $(RUNTIME_RESOURCES)/embedded/x86_64-unknown-linux-gnu/libswiftUnicodeDataTables.a

CORE_SOURCES := $(sort $(wildcard Sources/PosternCore/*.swift))
RUNTIME_SOURCES := $(sort $(wildcard Sources/PosternRuntime/*.swift))
# main.swift is the regular build's entry; the Embedded build uses EmbeddedEntry.swift.
MAIN_SOURCES := $(filter-out Sources/postern/main.swift,$(sort $(wildcard Sources/postern/*.swift)))
CLIBC := Sources/CLibc

# Debian packages each target needs (checked with dpkg, installed only if missing).
BUILD_DEBS := gcc libc6-dev libssl-dev libsystemd-dev
TEST_DEBS := $(BUILD_DEBS) python3 python3-pytest python3-aiosmtpd swaks strace systemd

.PHONY: all build run check deps-build deps-test unit blackbox bench-memory bench-flash bench-offline clean debug-build

all: build

deps-build:
	@Tests/tools/ensure-debs $(BUILD_DEBS)

deps-test:
	@Tests/tools/ensure-debs $(TEST_DEBS)

# --- the release build: Embedded Swift, linked by gcc --------------------------

build: deps-build build/postern

build/obj/clibc.o: $(CLIBC)/clibc.c $(CLIBC)/include/clibc.h
	@mkdir -p build/obj
	gcc -O2 -Wall -ffunction-sections -fdata-sections -I$(CLIBC)/include -c $< -o $@

build/obj/PosternCore.o: $(CORE_SOURCES)
	@mkdir -p build/obj build/modules
	swiftc $(SWIFT_FLAGS_EMBEDDED) -module-name PosternCore -emit-module \
		-emit-module-path build/modules/PosternCore.swiftmodule -c $(CORE_SOURCES) -o $@

build/obj/PosternRuntime.o: $(RUNTIME_SOURCES) build/obj/PosternCore.o $(CLIBC)/include/clibc.h Sources/CSystemd/shim.h
	swiftc $(SWIFT_FLAGS_EMBEDDED) -module-name PosternRuntime -I build/modules -I $(CLIBC)/include -I Sources/CSystemd \
		-emit-module -emit-module-path build/modules/PosternRuntime.swiftmodule -c $(RUNTIME_SOURCES) -o $@

build/obj/postern.o: $(MAIN_SOURCES) build/obj/PosternRuntime.o
	swiftc $(SWIFT_FLAGS_EMBEDDED) -module-name postern -I build/modules -I $(CLIBC)/include -I Sources/CSystemd \
		-c $(MAIN_SOURCES) -o $@

build/postern: build/obj/clibc.o build/obj/PosternCore.o build/obj/PosternRuntime.o build/obj/postern.o
	gcc -o $@ $^ -Wl,--gc-sections -Wl,--no-as-needed -lssl -lcrypto -lsystemd -Wl,--as-needed -lm $(EMBEDDED_LIBS)
	strip $@
	@echo "built $@: $$(stat -c %s $@) bytes"

# --- development ----------------------------------------------------------------

debug-build: deps-build
	swift build

run: deps-test build
	@mkdir -p build/dev-spool
	@echo "Postern on 127.0.0.1:2525 -> capture upstream on 127.0.0.1:2526 (Ctrl-C stops both)"
	@$(PY) Tests/tools/capture_upstream.py --port 2526 & cap=$$!; \
	trap 'kill $$cap 2>/dev/null' EXIT; \
	build/postern run --config Deploy/postern.dev.conf --log stderr

# --- tests ------------------------------------------------------------------------

check: deps-test
	swift build
	swift test
	$(MAKE) --no-print-directory build
	$(PY) -m pytest -q Tests/blackbox

unit:
	swift test

blackbox: build
	$(PY) -m pytest -q Tests/blackbox

# Memory figures of the release binary (idle RSS, peak RSS for 2 KB and 20 MB).
bench-memory: deps-test build
	$(PY) Tests/bench/memory.py

# Offline for weeks: 100,000 queued 2 KB messages; memory, recovery time, drain order.
bench-offline: deps-test build
	$(PY) Tests/bench/offline.py

# Flash wear of the spool on a loop-mounted ext4 image (needs root): device bytes
# and fdatasync calls per message for 2 KB and 100 KB, and writes while idle.
bench-flash: deps-test build
	@Tests/tools/ensure-debs strace e2fsprogs util-linux
	$(PY) Tests/bench/flash_wear.py

clean:
	rm -rf build .build
