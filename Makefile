# telltale - one non-recursive GNU Makefile for the library, the collector/CLI binary, the
# tests, the benchmarks and the fuzzers. `make help` lists the targets.
#
# Every target that needs Debian packages depends on a stamp that runs scripts/install-deps,
# so a fresh machine needs nothing but make and this checkout.

.DEFAULT_GOAL := all
SHELL := /bin/bash
.DELETE_ON_ERROR:
.SUFFIXES:

comma := ,
ifeq ($(origin CC),default)
CC := gcc
endif
ifeq ($(origin CXX),default)
CXX := g++
endif

SANITIZE ?=
ifneq ($(SANITIZE),)
BUILD ?= build/san-$(subst $(comma),-,$(SANITIZE))
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT ?= -O1
else
BUILD ?= build
SANFLAGS :=
OPT ?= -O2
endif

PREFIX ?= /usr/local
DESTDIR ?=

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
ifneq ($(WERROR),)
WARN += -Werror
endif

CPPFLAGS_ALL := -D_GNU_SOURCE -Iinclude -Isrc -DTT_BUILDING_LIBRARY $(CPPFLAGS)
CFLAGS_ALL := -std=c11 $(OPT) -g $(WARN) -fPIC -fvisibility=hidden -pthread -MMD -MP \
	$(SANFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SANFLAGS) $(LDFLAGS)

LIB_LDLIBS := -lzstd -lm
BIN_LDLIBS := -lzstd -lsqlite3 -lmicrohttpd -ljansson -lcurl -lgnutls -lm

DEPS_BUILD := $(BUILD)/.deps-build
DEPS_TEST := $(BUILD)/.deps-test
DEPS_BENCH := $(BUILD)/.deps-bench
DEPS_FUZZ := $(BUILD)/.deps-fuzz

# --- sources ------------------------------------------------------------------------------
COMMON_SRC := $(sort $(wildcard src/common/*.c))
CLIENT_SRC := $(sort $(wildcard src/client/*.c))
COLLECTOR_SRC := $(sort $(wildcard src/collector/*.c src/collector/*/*.c))
CLI_SRC := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/support/*.c tests/unit/*.c tests/unit/*/*.c \
	tests/integration/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
COLLECTOR_OBJ := $(call obj,$(COLLECTOR_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))
TEST_OBJ := $(call obj,$(TEST_SRC))

LIB_A := $(BUILD)/libtelltale.a
LIB_SO := $(BUILD)/libtelltale.so
BIN := $(BUILD)/telltale
PC := $(BUILD)/telltale.pc
RUNNER := $(BUILD)/tests/runner

# --- main targets -------------------------------------------------------------------------
.PHONY: all lib test run bench bench-build install uninstall clean fuzz fuzz-run soak help deps

all: $(LIB_A) $(LIB_SO) $(BIN) $(PC)

lib: $(LIB_A) $(LIB_SO)

help:
	@echo "make                 build libtelltale.a, libtelltale.so, telltale, telltale.pc"
	@echo "make run             build, start the collector and a demo agent, print where to look"
	@echo "make test            build and run every test (T=pattern selects some)"
	@echo "make test SANITIZE=address,undefined | SANITIZE=thread   the same under sanitizers"
	@echo "make bench           run the benchmarks, write docs/benchmarks.md"
	@echo "make soak            the long versions of the reliability tests"
	@echo "make fuzz-run        build the fuzzers and run each for FUZZ_SECONDS (default 60)"
	@echo "make format          lay the C sources out with clang-format (format-check: CI's check)"
	@echo "make install PREFIX=/usr/local"

deps: $(DEPS_BUILD)

$(DEPS_BUILD): scripts/install-deps
	@mkdir -p $(@D)
	scripts/install-deps build
	@touch $@

$(DEPS_TEST): scripts/install-deps
	@mkdir -p $(@D)
	scripts/install-deps build test
	@touch $@

$(DEPS_BENCH): scripts/install-deps
	@mkdir -p $(@D)
	scripts/install-deps build bench
	@touch $@

$(DEPS_FUZZ): scripts/install-deps
	@mkdir -p $(@D)
	scripts/install-deps build fuzz
	@touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

$(LIB_A): $(COMMON_OBJ) $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(COMMON_OBJ) $(CLIENT_OBJ)
	$(CC) -shared -Wl,-soname,libtelltale.so.0 -Wl,--no-undefined $(LDFLAGS_ALL) -o $@ $^ \
		$(LIB_LDLIBS)

$(BIN): $(CLI_OBJ) $(COLLECTOR_OBJ) $(LIB_A)
	$(CC) $(LDFLAGS_ALL) -o $@ $(CLI_OBJ) $(COLLECTOR_OBJ) $(LIB_A) $(BIN_LDLIBS)

$(PC): telltale.pc.in Makefile
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(shell sed -n \
		's/^#define TT_VERSION_STRING "\(.*\)"/\1/p' include/telltale.h)|g' $< > $@

# --- tests --------------------------------------------------------------------------------
$(RUNNER): $(TEST_OBJ) $(COLLECTOR_OBJ) $(LIB_A) | $(BIN)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $(TEST_OBJ) $(COLLECTOR_OBJ) $(LIB_A) $(BIN_LDLIBS)

$(BUILD)/obj/tests/%.o: CPPFLAGS_ALL += -Itests/support

TEST_ENV := TT_BIN=$(abspath $(BIN)) TT_LIB_SO=$(abspath $(LIB_SO)) TT_BUILD=$(abspath $(BUILD)) \
	TT_SRCDIR=$(abspath .) TT_TEST_OUTROOT=$(abspath $(BUILD))/test-out

ifneq ($(SANITIZE),)
TEST_ENV += TT_TEST_TIMEOUT_MULT=4 TT_SANITIZE=$(SANITIZE)
TEST_ENV += ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(abspath tests/tsan.supp)
endif

test: all $(RUNNER) | $(DEPS_TEST)
	$(TEST_ENV) $(RUNNER) $(T)

# --- run ----------------------------------------------------------------------------------
run: all | $(DEPS_TEST)
	BUILD=$(BUILD) scripts/run-demo

# --- install ------------------------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 0644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/libtelltale.a
	install -m 0755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/libtelltale.so.0
	ln -sf libtelltale.so.0 $(DESTDIR)$(PREFIX)/lib/libtelltale.so
	install -m 0644 include/telltale.h $(DESTDIR)$(PREFIX)/include/telltale.h
	sed -e 's|^prefix=.*|prefix=$(PREFIX)|' $(PC) > $(DESTDIR)$(PREFIX)/lib/pkgconfig/telltale.pc
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/telltale.pc
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/telltale

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libtelltale.a $(DESTDIR)$(PREFIX)/lib/libtelltale.so.0 \
		$(DESTDIR)$(PREFIX)/lib/libtelltale.so $(DESTDIR)$(PREFIX)/include/telltale.h \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig/telltale.pc $(DESTDIR)$(PREFIX)/bin/telltale

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Fragments of other parts (benchmarks, fuzzers, web assets, python), sorted by name.
include $(sort $(wildcard mk/*.mk))

# --- benchmarks (after the fragments, which fill BENCH_BINS and BENCH_CMDS) ----------------
bench-build: all $(BENCH_BINS)

bench: bench-build | $(DEPS_BENCH)
	BUILD=$(BUILD) TT_BIN=$(abspath $(BIN)) scripts/bench-run $(if $(BENCH),--only $(BENCH)) \
		-- $(BENCH_CMDS)
