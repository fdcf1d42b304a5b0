# The Python package (python/telltale) and its tests. Every pytest function of
# python/tests/test_*.py becomes one runner test named py_<function> (scripts/gen-python-tests
# writes the registrations; tests/support/pytest.c runs each through /usr/bin/python3 -m pytest),
# so `make test` counts them and `make test T=py_` runs only them.

PY_TESTS := $(sort $(wildcard python/tests/test_*.py))
PY_TESTS_C := $(BUILD)/gen/python_tests.c
PY_TESTS_OBJ := $(BUILD)/obj/gen/python_tests.o

$(PY_TESTS_C): $(PY_TESTS) scripts/gen-python-tests
	@mkdir -p $(@D)
	scripts/gen-python-tests $@ $(PY_TESTS)

$(PY_TESTS_OBJ): $(PY_TESTS_C) tests/support/test.h | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -Itests/support $(CFLAGS_ALL) -c $< -o $@

TEST_OBJ += $(PY_TESTS_OBJ)
$(RUNNER): $(PY_TESTS_OBJ)
