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
# Size flags of the release binaries only (not the tests' or the fuzzers'
# builds), for the 1 MB goal of issue 11 (stripped):
# - The SIL performance inliner's threshold at 0: Swift then inlines what is
#   marked always-inline or transparent (the standard library's small
#   accessors are) and little else. 1,105,624 bytes before, 885,016 after
#   (issue 11, x86_64). A 5 MB message costs the same CPU within the noise, a
#   100 KB one about a tenth more and a 2 KB one about a fifth more (0.32 to
#   0.38 ms in alternating runs of both builds; Postfix's is 2.3). The one hot
#   loop the profile found not inlined was the DATA codecs' vector scan, now
#   written without a generic call. Any threshold above 0 (15, 50) gave
#   1,109,768 bytes.
# - LLVM's machine outliner folds repeated instruction sequences into shared
#   functions, on the boards only (`BOARD_SWIFT_FLAGS`): armv7 is 1,122,892
#   bytes without it and 1,012,300 with it; aarch64 860,256 either way. On
#   x86_64 it saved 28 KB (893,256 against 921,928 bytes) for a seventh more
#   of the daemon's own (user) CPU: 0.125-0.138 against 0.102-0.113 ms per
#   2 KB message, 0.40 against 0.31-0.37 per 100 KB, 8.5-9.3 against 7.7 per
#   5 MB (issue 11, alternating runs), the calls into the shared sequences
#   sitting in the hot paths.
RELEASE_SWIFT_FLAGS := -Xfrontend -sil-inline-threshold -Xfrontend 0
BOARD_OUTLINER := -Xllvm -enable-machine-outliner=always
# Relative relocations packed (DT_RELR, glibc 2.36): 20 KB of .rela.dyn become
# 312 bytes, and the loader has less to write at start. x86_64 only: Debian 12's
# cross linkers (binutils 2.40) ignore it for aarch64 and arm.
RELEASE_LINK_FLAGS := -Wl,-z,pack-relative-relocs
RUNTIME_RESOURCES := $(shell swiftc -print-target-info 2>/dev/null | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')
EMBEDDED_LIBS := $(RUNTIME_RESOURCES)/embedded/x86_64-unknown-linux-gnu/libswiftUnicodeDataTables.a

CORE_SOURCES := $(sort $(wildcard Sources/PosternCore/*.swift))
RUNTIME_SOURCES := $(sort $(wildcard Sources/PosternRuntime/*.swift))
# main.swift is the regular build's entry; the Embedded build uses EmbeddedEntry.swift.
MAIN_SOURCES := $(filter-out Sources/postern/main.swift,$(sort $(wildcard Sources/postern/*.swift)))
CLIBC := Sources/CLibc
# Every C file of CLibc (libc helpers, the OpenSSL layer, child processes), one object each.
CLIBC_C := $(sort $(wildcard $(CLIBC)/*.c))
CLIBC_H := $(sort $(wildcard $(CLIBC)/include/*.h))
CLIBC_OBJS := $(CLIBC_C:$(CLIBC)/%.c=build/obj/c/%.o)

# Debian packages each target needs (checked with dpkg, installed only if missing).
BUILD_DEBS := gcc libc6-dev libssl-dev libcrypt-dev libsystemd-dev
# `make deb`: dpkg-shlibdeps (dpkg-dev) for the Depends: line.
DEB_DEBS := dpkg-dev
# The tests of Deploy/ also need man (man-db) and systemd-analyze (systemd), and
# install the package in a Debian 12 chroot made with debootstrap (which checks
# the mirror's signatures with debian-archive-keyring).
TEST_DEBS := $(BUILD_DEBS) python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl strace \
	$(DEB_DEBS) man-db systemd debootstrap debian-archive-keyring liblockfile1 libbsd0
# mail(1) of bsd-mailx, unpacked rather than installed: its package depends on an
# MTA, and the MTA under test is Postern (Tests/tools/unpack-deb).
MAILX_DIR := build/tools/bsd-mailx

.PHONY: all build run check deps-build deps-test unit blackbox bench bench-memory bench-flash bench-offline bench-board clean debug-build \
	install deb deps-deb lint-deb fuzz fuzz-smoke fuzz-build fuzz-embedded-build

all: build

deps-build:
	@Tests/tools/ensure-debs $(BUILD_DEBS)

# With the board builds' packages (deps-board), so one `apt-get update` does.
deps-test: foreign-archs
	@Tests/tools/ensure-debs $(TEST_DEBS) $(BOARD_DEBS)
	@Tests/tools/ensure-postfix
	@Tests/tools/unpack-deb bsd-mailx $(MAILX_DIR)

# --- the release build: Embedded Swift, linked by gcc --------------------------

build: deps-build build/postern

build/obj/c/%.o: $(CLIBC)/%.c $(CLIBC_H)
	@mkdir -p build/obj/c
	gcc -O2 -Wall -D_FORTIFY_SOURCE=2 -fstack-protector-strong -ffunction-sections -fdata-sections \
		-I$(CLIBC)/include -c $< -o $@

# The release binary is compiled as one Swift module: the sources of the three
# SPM modules (Package.swift keeps them apart, which the regular build checks)
# with their `import PosternCore`/`import PosternRuntime` lines dropped, in one
# whole-module invocation. Embedded Swift specialises generic code in every
# module that uses it, so three modules carried up to three copies of it:
# 1,041,736 bytes as three modules, 985,912 as one (measured in issue 9).
SINGLE_DIR := build/single
$(SINGLE_DIR)/.stamp: $(CORE_SOURCES) $(RUNTIME_SOURCES) $(MAIN_SOURCES)
	@rm -rf $(SINGLE_DIR) && mkdir -p $(SINGLE_DIR)
	@for f in $(CORE_SOURCES) $(RUNTIME_SOURCES) $(MAIN_SOURCES); do \
		d=$$(basename $$(dirname $$f)); \
		sed -e '/^import PosternCore$$/d' -e '/^import PosternRuntime$$/d' $$f > $(SINGLE_DIR)/$${d}_$$(basename $$f); \
	done
	@touch $@

build/obj/postern-single.o: $(SINGLE_DIR)/.stamp $(CLIBC_H) Sources/CSystemd/shim.h
	@mkdir -p build/obj
	swiftc $(SWIFT_FLAGS_EMBEDDED) $(RELEASE_SWIFT_FLAGS) -module-name postern -I $(CLIBC)/include -I Sources/CSystemd \
		-c $(SINGLE_DIR)/*.swift -o $@

build/postern: $(CLIBC_OBJS) build/obj/postern-single.o
	gcc -o $@ $^ -Wl,--gc-sections -Wl,-z,relro -Wl,-z,now $(RELEASE_LINK_FLAGS) \
		-Wl,--no-as-needed -lssl -lcrypto -lcrypt -lsystemd -Wl,--as-needed -lm $(EMBEDDED_LIBS)
	strip $@
	@echo "built $@: $$(stat -c %s $@) bytes"

# --- board binaries: cross-built Embedded Swift ---------------------------------------
#
#   make board ARCH=aarch64   build/aarch64/postern  (Raspberry Pi OS 64-bit, Debian arm64)
#   make board ARCH=armv7     build/armv7/postern    (Raspberry Pi OS 32-bit, Debian armhf)
#   make board-check ARCH=…   (part of `make check`) the black-box tests marked `board`
#                             with the board binary under qemu-user
#
# The same single module as build/postern, compiled for the toolchain's embedded
# target and linked by Debian's cross gcc against the target's glibc, libssl,
# libcrypto and libsystemd from Debian's multiarch packages (installed here when
# missing, after `dpkg --add-architecture`). Both are built with
# _FILE_OFFSET_BITS=64: on armv7 a 32-bit readdir fails with EOVERFLOW on a file
# system with 64-bit inode numbers (found under qemu: a restarted daemon saw an
# empty spool), and off_t must hold a spool larger than 2 GiB. And with
# _TIME_BITS=64, so that on armv7 time_t is 64 bits wide in everything Postern
# compiles (glibc 2.34+ has the *_time64 entry points): with Debian 12's 32-bit
# time_t, clock_gettime fails with EOVERFLOW from 2038-01-19. No time_t crosses
# into libssl, libcrypto or libsystemd, whose Debian 12 armhf builds still use
# 32-bit time_t (OpenSSL's own certificate checks therefore end in 2038 there,
# which only a rebuilt OpenSSL, as in Debian 13, fixes). On armv7 the
# toolchain's Unicode data tables are built soft-float; their functions take and
# return integers only, so the float-ABI tag mismatch is waived at link time.
# ARCH unset: this machine's own build (build/postern); `make install` and
# `make deb` take ARCH too, and then package the board binary.
ARCH ?=
ifneq ($(filter-out aarch64 armv7,$(ARCH)),)
$(error ARCH must be aarch64 or armv7, not "$(ARCH)")
endif
ifneq ($(filter board board-check,$(MAKECMDGOALS)),)
ifeq ($(ARCH),)
$(error make $(filter board board-check,$(MAKECMDGOALS)) needs ARCH=aarch64 or ARCH=armv7)
endif
endif
ifeq ($(ARCH),armv7)
BOARD_TRIPLE := armv7-none-none-eabi
BOARD_DEBARCH := armhf
BOARD_GNU := arm-linux-gnueabihf
BOARD_QEMU := qemu-arm-static
BOARD_SWIFT_EXTRA := -Xcc -mfloat-abi=hard
BOARD_LD_EXTRA := -Wl,--no-warn-mismatch
# The 32-bit board also fills a spool past 2 GiB (test_big_spool.py, about 3
# minutes under qemu): off_t, Int and the spool's byte counts at their edge.
BOARD_MARKS := board or big
else
BOARD_TRIPLE := aarch64-none-none-elf
BOARD_DEBARCH := arm64
BOARD_GNU := aarch64-linux-gnu
BOARD_QEMU := qemu-aarch64-static
BOARD_SWIFT_EXTRA :=
BOARD_LD_EXTRA :=
BOARD_MARKS := board
endif
BOARD_DIR := build/$(ARCH)
ifeq ($(ARCH),)
# What install and deb package: the binary, the target that builds it, and how
# to run it here (for its version).
PACKAGED_BIN := build/postern
PACKAGED_TARGET := build
PACKAGED_RUN :=
DEB_ARCH = $$(dpkg --print-architecture)
else
PACKAGED_BIN := $(BOARD_DIR)/postern
PACKAGED_TARGET := board
PACKAGED_RUN := $(BOARD_QEMU) -L /usr/$(BOARD_GNU)
DEB_ARCH = $(BOARD_DEBARCH)
endif
BOARD_SWIFT_FLAGS := -target $(BOARD_TRIPLE) -enable-experimental-feature Embedded -wmo -parse-as-library -Osize \
	-Xfrontend -function-sections $(RELEASE_SWIFT_FLAGS) $(BOARD_OUTLINER) $(BOARD_SWIFT_EXTRA) -Xcc -D__linux__ -Xcc -D__unix__ -Xcc -D_FILE_OFFSET_BITS=64 \
	-Xcc -D_TIME_BITS=64 -Xcc -isystem -Xcc /usr/include/$(BOARD_GNU) -Xcc -isystem -Xcc /usr/include
BOARD_CLIBC_OBJS := $(CLIBC_C:$(CLIBC)/%.c=$(BOARD_DIR)/c/%.o)

.PHONY: board board-check boards deps-board
board: deps-board $(BOARD_DIR)/postern

# Both architectures' packages at once: one `apt-get update` for both.
BOARD_DEBS := qemu-user-static gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
	$(foreach a,arm64 armhf,libc6-dev:$(a) libssl-dev:$(a) libcrypt-dev:$(a) libsystemd-dev:$(a))
.PHONY: foreign-archs
foreign-archs:
	@for a in arm64 armhf; do \
		dpkg --print-foreign-architectures | grep -qx $$a || dpkg --add-architecture $$a; \
	done
deps-board: foreign-archs
	@Tests/tools/ensure-debs $(BUILD_DEBS) $(BOARD_DEBS)

# Both board binaries, side by side (after the single-module sources they share).
boards: deps-board $(SINGLE_DIR)/.stamp
	$(MAKE) --no-print-directory -j2 board-build-aarch64 board-build-armv7
board-build-%:
	$(MAKE) --no-print-directory ARCH=$* build/$*/postern

$(BOARD_DIR)/c/%.o: $(CLIBC)/%.c $(CLIBC_H)
	@mkdir -p $(BOARD_DIR)/c
	$(BOARD_GNU)-gcc -O2 -Wall -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64 -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
		-ffunction-sections -fdata-sections -I$(CLIBC)/include -c $< -o $@

$(BOARD_DIR)/postern.o: $(SINGLE_DIR)/.stamp $(CLIBC_H) Sources/CSystemd/shim.h
	@mkdir -p $(BOARD_DIR)
	swiftc $(BOARD_SWIFT_FLAGS) -module-name postern -I $(CLIBC)/include -I Sources/CSystemd \
		-c $(SINGLE_DIR)/*.swift -o $@

$(BOARD_DIR)/postern: $(BOARD_CLIBC_OBJS) $(BOARD_DIR)/postern.o
	$(BOARD_GNU)-gcc -o $@ $^ -Wl,--gc-sections -Wl,-z,relro -Wl,-z,now $(BOARD_LD_EXTRA) \
		-Wl,--no-as-needed -lssl -lcrypto -lcrypt -lsystemd -Wl,--as-needed -lm \
		$(RUNTIME_RESOURCES)/embedded/$(BOARD_TRIPLE)/libswiftUnicodeDataTables.a
	$(BOARD_GNU)-strip $@
	@echo "built $@: $$(stat -c %s $@) bytes"

# The tests run the board binary through build/<arch>/postern-qemu, which execs
# qemu-user with the target's libraries (/usr/<triple>). Under qemu-user a program
# cannot exec another binary of the target (that needs binfmt_misc, a setting of
# the whole machine), so the drop directory's pickup child is not among them.
board-check: board
	@printf '#!/bin/sh\nexec %s -L /usr/%s -0 "$$0" %s "$$@"\n' $(BOARD_QEMU) $(BOARD_GNU) \
		$(CURDIR)/$(BOARD_DIR)/postern > $(BOARD_DIR)/postern-qemu
	@chmod 0755 $(BOARD_DIR)/postern-qemu
	POSTERN_ARCH=$(ARCH) POSTERN_BIN=$(CURDIR)/$(BOARD_DIR)/postern-qemu $(PY) -m pytest -q -m "$(BOARD_MARKS)" Tests/blackbox

# --- development ----------------------------------------------------------------

debug-build: deps-build
	swift build

# Only what the daemon and the capture upstream need (not the test or board
# packages: the quick start adds no foreign architecture).
run: deps-build build
	@Tests/tools/ensure-debs python3 python3-aiosmtpd
	@mkdir -p build/dev-spool
	@echo "Postern on 127.0.0.1:2525 -> capture upstream on 127.0.0.1:2526 (Ctrl-C stops both)"
	@$(PY) Tests/tools/capture_upstream.py --port 2526 & cap=$$!; \
	trap 'kill $$cap 2>/dev/null' EXIT; \
	build/postern run --config Deploy/postern.dev.conf --log stderr

# --- tests ------------------------------------------------------------------------

# The three Embedded builds (this machine's and both boards') side by side, after
# the single-module sources they share; then the suite natively and, for the
# tests marked `board`, once per board binary under qemu-user.
check: deps-test
	swift build
	swift test
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory $(SINGLE_DIR)/.stamp
	$(MAKE) --no-print-directory -j2 build board-build-aarch64 board-build-armv7
	$(PY) -m pytest -q Tests/blackbox
	$(MAKE) --no-print-directory board-check ARCH=aarch64
	$(MAKE) --no-print-directory board-check ARCH=armv7

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

# Footprint and idle cost per architecture: build/postern natively, the board
# binaries inside Debian 12's own ARM kernels under qemu-system (qemu-user's
# figures would include the emulator): size, idle and peak RSS and
# Private_Dirty, wake-ups per minute with and without the watchdog, bytes
# written while idle (Tests/bench/board_footprint.py, about 8 minutes).
BENCH_BOARD_DEBS := qemu-system-arm squashfs-tools
bench-board: build boards
	@Tests/tools/ensure-debs $(BUILD_DEBS) $(BOARD_DEBS) $(BENCH_BOARD_DEBS)
	$(PY) Tests/bench/board_footprint.py --no-install

# Throughput against Postfix (needs root; not part of `make check`): Postfix's
# smtp-source into its smtp-sink on loopback, directly, through build/postern and
# through a private Postfix null client (its own config, queue and data
# directories under the scratch directory; the system's Postfix is never
# started); then Postern and Postfix again with every sync slowed by
# build/tools/slow_sync.so. Medians of BENCH_RUNS runs (default 3);
# BENCH_ARGS=--quick for one short run of each. Tables and JSON lines in
# build/bench/relay.md and relay.jsonl (Tests/bench/relay_bench.py).
bench: deps-test build build/tools/slow_sync.so
	@Tests/tools/ensure-postfix
	$(PY) Tests/bench/relay_bench.py $(if $(BENCH_RUNS),--runs $(BENCH_RUNS)) $(BENCH_ARGS)

# The LD_PRELOAD shim of the slowed-sync rows (Tests/tools/slow_sync.c).
build/tools/slow_sync.so: Tests/tools/slow_sync.c
	@mkdir -p build/tools
	gcc -shared -fPIC -O2 -Wall -o $@ $< -ldl

# First whatever a killed package test left mounted in build/debian-chroot
# (test_deploy.py: overlays, tmpfs and proc; never a bind of the host's files).
clean:
	@awk -v top="$(CURDIR)/build/" 'index($$5, top) == 1 {print $$5}' /proc/self/mountinfo | sort -r | \
		xargs -r -n1 umount --lazy
	rm -rf build .build

# --- fuzzing (Tests/fuzz/README.md) --------------------------------------------------
#
#   make fuzz [FUZZ_SECONDS=300] [FUZZ_TARGETS="session address"]
#                  run each target that long, merge what is new into its corpus
#                  (Tests/fuzz/corpus/<name>/), print executions, coverage, crashes
#   make fuzz-smoke   (part of `make check`) a few seconds of each with a fixed
#                  seed, the corpus replayed in the regular and the Embedded build
#
# PosternCore and PosternRuntime are compiled once with the fuzzer's
# instrumentation and -enable-testing (targets use `@testable import`), and each
# Tests/fuzz/<name>.swift is linked against them with the harness.

FUZZ_DIR := build/fuzz
FUZZ_SOURCES := $(sort $(wildcard Tests/fuzz/*.swift))
FUZZ_TARGETS ?= $(basename $(notdir $(FUZZ_SOURCES)))
# Targets that reach the runtime (they import PosternRuntime) also link the C
# helpers and the libraries of the release build.
FUZZ_RUNTIME_ALL := $(basename $(notdir $(shell grep -l '^@testable import PosternRuntime\|^import PosternRuntime' $(FUZZ_SOURCES))))
FUZZ_CORE_ALL := $(filter-out $(FUZZ_RUNTIME_ALL),$(basename $(notdir $(FUZZ_SOURCES))))
FUZZ_HARNESS := Tests/fuzz/harness/FuzzInput.swift
FUZZ_INCLUDES := -I $(FUZZ_DIR)/modules -I $(CLIBC)/include -I Sources/CSystemd
FUZZ_SWIFTC := swiftc -sanitize=fuzzer,address -parse-as-library -enable-testing -O -wmo -use-ld=lld
# The Embedded replay build: the release build's flags at -Onone (the same traps,
# a third of the compile time) and with -enable-testing.
FUZZ_EMBEDDED_SWIFTC := swiftc $(filter-out -Osize,$(SWIFT_FLAGS_EMBEDDED)) -Onone -enable-testing
FUZZ_LIBS := -lssl -lcrypto -lcrypt -lsystemd
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 4

$(FUZZ_DIR)/obj/PosternCore.o: $(CORE_SOURCES)
	@mkdir -p $(FUZZ_DIR)/obj $(FUZZ_DIR)/modules
	$(FUZZ_SWIFTC) -module-name PosternCore -emit-module \
		-emit-module-path $(FUZZ_DIR)/modules/PosternCore.swiftmodule -c $(CORE_SOURCES) -o $@

$(FUZZ_DIR)/obj/PosternRuntime.o: $(RUNTIME_SOURCES) $(FUZZ_DIR)/obj/PosternCore.o $(CLIBC_H) Sources/CSystemd/shim.h
	$(FUZZ_SWIFTC) -module-name PosternRuntime $(FUZZ_INCLUDES) -emit-module \
		-emit-module-path $(FUZZ_DIR)/modules/PosternRuntime.swiftmodule -c $(RUNTIME_SOURCES) -o $@

FUZZ_CLIBC_OBJS := $(CLIBC_C:$(CLIBC)/%.c=$(FUZZ_DIR)/obj/c/%.o)

$(FUZZ_DIR)/obj/c/%.o: $(CLIBC)/%.c $(CLIBC_H)
	@mkdir -p $(FUZZ_DIR)/obj/c
	gcc -O2 -Wall -I$(CLIBC)/include -c $< -o $@

$(FUZZ_CORE_ALL:%=$(FUZZ_DIR)/bin/%): $(FUZZ_DIR)/bin/%: Tests/fuzz/%.swift $(FUZZ_HARNESS) \
		Tests/fuzz/harness/entry.swift $(FUZZ_DIR)/obj/PosternCore.o
	@mkdir -p $(@D)
	$(FUZZ_SWIFTC) -module-name fuzz_$* $(FUZZ_INCLUDES) $(filter %.swift %.o,$^) -o $@

$(FUZZ_RUNTIME_ALL:%=$(FUZZ_DIR)/bin/%): $(FUZZ_DIR)/bin/%: Tests/fuzz/%.swift $(FUZZ_HARNESS) \
		Tests/fuzz/harness/entry.swift $(FUZZ_DIR)/obj/PosternCore.o $(FUZZ_DIR)/obj/PosternRuntime.o $(FUZZ_CLIBC_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_SWIFTC) -module-name fuzz_$* $(FUZZ_INCLUDES) $(filter %.swift %.o,$^) $(FUZZ_LIBS) -o $@

$(FUZZ_DIR)/embedded/obj/PosternCore.o: $(CORE_SOURCES)
	@mkdir -p $(FUZZ_DIR)/embedded/obj $(FUZZ_DIR)/embedded/modules
	$(FUZZ_EMBEDDED_SWIFTC) -module-name PosternCore -emit-module \
		-emit-module-path $(FUZZ_DIR)/embedded/modules/PosternCore.swiftmodule -c $(CORE_SOURCES) -o $@

$(FUZZ_DIR)/embedded/obj/PosternRuntime.o: $(RUNTIME_SOURCES) $(FUZZ_DIR)/embedded/obj/PosternCore.o $(CLIBC_H) Sources/CSystemd/shim.h
	$(FUZZ_EMBEDDED_SWIFTC) -module-name PosternRuntime -I $(FUZZ_DIR)/embedded/modules -I $(CLIBC)/include -I Sources/CSystemd \
		-emit-module -emit-module-path $(FUZZ_DIR)/embedded/modules/PosternRuntime.swiftmodule -c $(RUNTIME_SOURCES) -o $@

# Each Embedded replay driver: the target file with the replay `main`, linked by
# gcc like the release binary.
$(FUZZ_DIR)/embedded/bin/%: Tests/fuzz/%.swift $(FUZZ_HARNESS) Tests/fuzz/harness/replay.swift \
		$(FUZZ_DIR)/embedded/obj/PosternCore.o $(FUZZ_CLIBC_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_EMBEDDED_SWIFTC) -module-name fuzz_$* -I $(FUZZ_DIR)/embedded/modules -I $(CLIBC)/include -I Sources/CSystemd \
		-c $(filter %.swift,$^) -o $(FUZZ_DIR)/embedded/obj/fuzz_$*.o
	gcc -o $@ $(FUZZ_DIR)/embedded/obj/fuzz_$*.o $(FUZZ_DIR)/embedded/obj/PosternCore.o \
		$(if $(filter $*,$(FUZZ_RUNTIME_ALL)),$(FUZZ_DIR)/embedded/obj/PosternRuntime.o) \
		$(FUZZ_CLIBC_OBJS) $(FUZZ_LIBS) -lm $(EMBEDDED_LIBS)

$(FUZZ_RUNTIME_ALL:%=$(FUZZ_DIR)/embedded/bin/%): $(FUZZ_DIR)/embedded/obj/PosternRuntime.o

fuzz-build: deps-build $(FUZZ_TARGETS:%=$(FUZZ_DIR)/bin/%)

fuzz-embedded-build: deps-build $(FUZZ_TARGETS:%=$(FUZZ_DIR)/embedded/bin/%)

fuzz-smoke:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory -j2 fuzz-build fuzz-embedded-build && \
	Tests/fuzz/run smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS) && \
	echo "fuzz-smoke: $$(( $$(date +%s) - start ))s"

fuzz: fuzz-build
	Tests/fuzz/run long $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# --- installation and the Debian package --------------------------------------------
#
#   make install [DESTDIR=/stage] [PREFIX=/usr/local] [SENDMAIL_LINKS=no]
#   make deb        build/postern_<version>_<arch>.deb (apt install ./build/postern_*.deb)
#   make deb ARCH=aarch64|armv7   the same for a board: build/postern_<version>_arm64.deb,
#                   build/postern_<version>_armhf.deb (make install ARCH=… installs that binary)
#
# The binary goes to $(PREFIX)/sbin, the man pages to $(PREFIX)/share/man, and
# systemd's files under $(PREFIX)/lib, where systemd looks for them for both
# /usr/local and /usr. The one exception is Debian 12's unit directory: with
# PREFIX=/usr the units go to /lib/systemd/system, which is what
# `pkg-config --variable=systemdsystemunitdir systemd` gives on Debian 12 and where
# lintian expects a package's units (/usr/lib/systemd/system only from Debian 13).
# /etc/postern/postern.conf is the binary's default and is not under PREFIX; an
# existing one is never overwritten.
#
# A plain `make install` (no DESTDIR) onto a running system also creates the user
# and the spool and updates the journal catalog, as the package's postinst does.
#
# Postern is also the system's mail transport agent: the same binary called as
# sendmail, mailq or newaliases (by argv[0]). So install makes relative symbolic
# links to $(SBINDIR)/postern: $(SBINDIR)/sendmail, $(BINDIR)/mailq and
# $(BINDIR)/newaliases, and with PREFIX=/usr also /usr/lib/sendmail (the
# historical path old programs call, FHS 3.0 §4.6.2). Other prefixes get no
# lib/sendmail: nothing looks for $(PREFIX)/lib/sendmail, and /usr/lib/sendmail
# belongs to the system's package manager. The man pages sendmail(8), mailq(8)
# and newaliases(8) are links to postern(8). SENDMAIL_LINKS=no installs none of
# these (Postern alongside another MTA). A link is never written over a file
# that is not already a link to postern (another MTA's sendmail): install stops
# before installing anything and names it.

PREFIX ?= /usr/local
SBINDIR = $(PREFIX)/sbin
BINDIR = $(PREFIX)/bin
MANDIR = $(PREFIX)/share/man
ifeq ($(PREFIX),/usr)
UNITDIR ?= /lib/systemd/system
else
UNITDIR ?= $(PREFIX)/lib/systemd/system
endif
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
CATALOGDIR ?= $(PREFIX)/lib/systemd/catalog
CONFDIR = /etc/postern
SENDMAIL_LINKS ?= yes
ifeq ($(SENDMAIL_LINKS),yes)
# Each links to $(SBINDIR)/postern (postern.8.gz), relative to its own directory.
MTA_LINKS := $(SBINDIR)/sendmail $(BINDIR)/mailq $(BINDIR)/newaliases $(if $(filter /usr,$(PREFIX)),/usr/lib/sendmail)
MTA_MAN_LINKS := $(MANDIR)/man8/sendmail.8.gz $(MANDIR)/man8/mailq.8.gz $(MANDIR)/man8/newaliases.8.gz
else ifneq ($(SENDMAIL_LINKS),no)
$(error SENDMAIL_LINKS must be yes or no, not "$(SENDMAIL_LINKS)")
endif

install: $(PACKAGED_TARGET)
	@for l in $(MTA_LINKS:%=$(DESTDIR)%) $(MTA_MAN_LINKS:%=$(DESTDIR)%); do \
		if [ -e "$$l" ] || [ -L "$$l" ]; then \
			case "$$(readlink "$$l")" in *postern|*postern.8.gz) ;; *) \
				echo "$$l exists and is not Postern's (another MTA?): remove it, or make install SENDMAIL_LINKS=no" >&2; \
				exit 1;; \
			esac; \
		fi; \
	done
	install -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(CONFDIR)
	install -m 0755 $(PACKAGED_BIN) $(DESTDIR)$(SBINDIR)/postern
	sed 's|/usr/sbin/postern|$(SBINDIR)/postern|g' Deploy/postern.service > $(DESTDIR)$(UNITDIR)/postern.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/postern.service
	install -m 0644 Deploy/postern.socket $(DESTDIR)$(UNITDIR)/postern.socket
	install -m 0644 Deploy/postern.sysusers $(DESTDIR)$(SYSUSERSDIR)/postern.conf
	install -m 0644 Deploy/postern.tmpfiles $(DESTDIR)$(TMPFILESDIR)/postern.conf
	install -m 0644 Deploy/postern.catalog $(DESTDIR)$(CATALOGDIR)/postern.catalog
	gzip -9nc Deploy/postern.8 > $(DESTDIR)$(MANDIR)/man8/postern.8.gz
	gzip -9nc Deploy/postern.conf.5 > $(DESTDIR)$(MANDIR)/man5/postern.conf.5.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/postern.8.gz $(DESTDIR)$(MANDIR)/man5/postern.conf.5.gz
	@set -e; for l in $(MTA_LINKS); do \
		target=$$(realpath -m --relative-to="$$(dirname "$$l")" $(SBINDIR)/postern); \
		install -d -m 0755 "$(DESTDIR)$$(dirname "$$l")"; \
		echo "ln -sfn $$target $(DESTDIR)$$l"; ln -sfn "$$target" "$(DESTDIR)$$l"; \
	done; \
	for l in $(MTA_MAN_LINKS); do echo "ln -sfn postern.8.gz $(DESTDIR)$$l"; ln -sfn postern.8.gz "$(DESTDIR)$$l"; done
	@if [ -e $(DESTDIR)$(CONFDIR)/postern.conf ]; then \
		echo "kept the existing $(DESTDIR)$(CONFDIR)/postern.conf (the example is Deploy/postern.conf)"; \
	else \
		install -m 0644 Deploy/postern.conf $(DESTDIR)$(CONFDIR)/postern.conf; \
		echo "installed $(DESTDIR)$(CONFDIR)/postern.conf: set [upstream] host"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
		set -x; \
		systemd-sysusers $(SYSUSERSDIR)/postern.conf; \
		systemd-tmpfiles --create $(TMPFILESDIR)/postern.conf; \
		journalctl --update-catalog; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

DEB_ROOT := build/deb
DEB_STAGE := $(DEB_ROOT)/debian/postern
DEB_MAINTAINER ?= Postern maintainers <maintainers@postern.invalid>

deps-deb:
	@Tests/tools/ensure-debs $(DEB_DEBS)

# The package is staged by `make install DESTDIR=… PREFIX=/usr` (always with the
# sendmail links: the package is the system's MTA), then given its
# control file (the version from the packaged binary's `version`, Depends from
# dpkg-shlibdeps), conffiles, md5sums and the maintainer scripts of
# Deploy/debian/, and built with dpkg-deb as root:root whoever builds it.
deb: deps-deb $(PACKAGED_TARGET)
	rm -rf $(DEB_ROOT) build/postern_*_$(DEB_ARCH).deb
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/$(DEB_STAGE) PREFIX=/usr SENDMAIL_LINKS=yes ARCH=$(ARCH) \
		-o $(PACKAGED_BIN)
	install -d -m 0755 $(DEB_STAGE)/usr/share/doc/postern $(DEB_STAGE)/DEBIAN
	set -euo pipefail; \
	first=$$(git log --format=%cd --date=format:%Y 2>/dev/null | tail -n 1); \
	last=$$(git log -1 --format=%cd --date=format:%Y 2>/dev/null || date +%Y); \
	years=$${first:-$$last}; [ "$$years" = "$$last" ] || years="$$years-$$last"; \
	sed "s|@YEARS@|$$years|" Deploy/debian/copyright.in > $(DEB_STAGE)/usr/share/doc/postern/copyright; \
	chmod 0644 $(DEB_STAGE)/usr/share/doc/postern/copyright; \
	version=$$($(PACKAGED_RUN) $(PACKAGED_BIN) version | sed -n 's/^postern //p'); \
	arch=$(DEB_ARCH); \
	date=$$(date -R -d @$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)}); \
	printf 'postern (%s) unstable; urgency=medium\n\n  * Built from the Postern source tree with make deb.\n\n -- %s  %s\n' \
		"$$version" "$(DEB_MAINTAINER)" "$$date" | gzip -9n > $(DEB_STAGE)/usr/share/doc/postern/changelog.gz; \
	chmod 0644 $(DEB_STAGE)/usr/share/doc/postern/changelog.gz; \
	printf 'Source: postern\n\nPackage: postern\nArchitecture: any\n' > $(DEB_ROOT)/debian/control; \
	depends=$$(cd $(DEB_ROOT) && dpkg-shlibdeps -O -e debian/postern/usr/sbin/postern 2>/dev/null | sed -n 's/^shlibs:Depends=//p'); \
	[ -n "$$depends" ]; \
	find $(DEB_STAGE) -type d -exec chmod 0755 {} +; \
	size=$$(du -sk --exclude=DEBIAN $(DEB_STAGE) | cut -f1); \
	sed -e "s|@VERSION@|$$version|" -e "s|@ARCH@|$$arch|" -e "s|@MAINTAINER@|$(DEB_MAINTAINER)|" \
		-e "s|@INSTALLED_SIZE@|$$size|" -e "s|@DEPENDS@|$$depends|" Deploy/debian/control.in > $(DEB_STAGE)/DEBIAN/control; \
	echo /etc/postern/postern.conf > $(DEB_STAGE)/DEBIAN/conffiles; \
	install -m 0755 Deploy/debian/postinst Deploy/debian/prerm Deploy/debian/postrm $(DEB_STAGE)/DEBIAN/; \
	(cd $(DEB_STAGE) && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
		> $(DEB_STAGE)/DEBIAN/md5sums; \
	chmod 0644 $(DEB_STAGE)/DEBIAN/control $(DEB_STAGE)/DEBIAN/conffiles $(DEB_STAGE)/DEBIAN/md5sums; \
	dpkg-deb --root-owner-group -Zxz --build $(DEB_STAGE) build/postern_$${version}_$${arch}.deb

# Debian's own checks of the package (not part of `make check`: lintian's verdicts
# change between its versions).
lint-deb: deb
	@Tests/tools/ensure-debs lintian
	lintian --info build/postern_*.deb
