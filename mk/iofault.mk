# The tests' I/O fault shim (tests/shim/iofault.c): an LD_PRELOAD library that fails the Nth
# write or sync, kills during a checkpoint, or simulates a power loss under a real `telltale
# serve` (tests/integration/test_dbfault.c finds it through $TT_BUILD). Built without the
# sanitizers (it is preloaded into sanitized and plain binaries alike); never part of telltale.
IOFAULT_SO := $(BUILD)/tests/libiofault.so

$(IOFAULT_SO): tests/shim/iofault.c | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g -D_GNU_SOURCE $(WARN) -fPIC -shared -pthread -o $@ $< -ldl

test soak: $(IOFAULT_SO)
