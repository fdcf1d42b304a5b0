# The Python package (python/telltale) and its tests. Every pytest function of
# python/tests/test_*.py becomes two runner tests, py_<function>.ext and py_<function>.ctypes,
# one per implementation of the package's hot calls (scripts/gen-python-tests writes the
# registrations; tests/support/pytest.c runs each through /usr/bin/python3 -m pytest with
# TELLTALE_IMPL set), so `make test` counts them and `make test T=py_` runs only them.

PY_TESTS := $(sort $(wildcard python/tests/test_*.py))
PY_TESTS_C := $(BUILD)/gen/python_tests.c
PY_TESTS_OBJ := $(BUILD)/obj/gen/python_tests.o

# Under a sanitizer the Python tests run once, through the extension: the extension is C and
# is what the sanitizer checks; a race or a memory error in the library shows whichever
# implementation drives it, and the ctypes layer is pure Python (both run in the normal build).
ifneq ($(SANITIZE),)
PY_IMPLS := ext
else
PY_IMPLS := ext ctypes
endif

$(PY_TESTS_C): $(PY_TESTS) scripts/gen-python-tests mk/python.mk
	@mkdir -p $(@D)
	PY_IMPLS="$(PY_IMPLS)" scripts/gen-python-tests $@ $(PY_TESTS)

$(PY_TESTS_OBJ): $(PY_TESTS_C) tests/support/test.h | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -Itests/support $(CFLAGS_ALL) -c $< -o $@

TEST_OBJ += $(PY_TESTS_OBJ)
$(RUNNER): $(PY_TESTS_OBJ)

# The compiled core of the package (python/ext/ext.c -> telltale._ext), built against Debian's
# python3-dev headers for /usr/bin/python3 into $(BUILD)/python/telltale/, beside the library
# it binds: the package finds it there next to $(BUILD)/libtelltale.so (and, installed, in its
# own directory). Under SANITIZE it is instrumented like the library. `make test` and `make bench`
# build it; the file name carries the interpreter's ABI suffix, so another Python never loads
# it. The suffix is asked of the interpreter when the rule runs (after install-deps), through a
# sub-make. The file is replaced in one rename, so an interpreter starting meanwhile never loads
# half of it.
PYTHON := /usr/bin/python3
PY_EXT_DIR := $(BUILD)/python/telltale
py_sysconfig = $(shell $(PYTHON) -c 'import sysconfig; print($(1))')

py_ext_file = $(PY_EXT_DIR)/_ext$(call py_sysconfig,sysconfig.get_config_var("EXT_SUFFIX"))

# python-ext for `make test` (test group: python3-dev), python-ext-bench for `make bench`.
.PHONY: python-ext python-ext-bench
python-ext: | $(DEPS_TEST)
	+@$(MAKE) --no-print-directory $(py_ext_file)
python-ext-bench: | $(DEPS_BENCH)
	+@$(MAKE) --no-print-directory $(py_ext_file)

$(PY_EXT_DIR)/_ext%.so: python/ext/ext.c include/telltale.h
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g $(WARN) -fPIC -fvisibility=hidden $(SANFLAGS) $(CFLAGS) -Iinclude \
		-isystem $(call py_sysconfig,sysconfig.get_paths()["include"]) -shared \
		$(LDFLAGS_ALL) -o $@.tmp $<
	mv -f $@.tmp $@
