# Examples (examples/*.c), built by `make` into $(BUILD)/examples/ against the static library:
# examples/agent.c is the demo agent loop in C (python/telltale_demo is the Python one).
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(sort $(wildcard examples/*.c)))

all: $(EXAMPLE_BINS)

$(BUILD)/examples/%: examples/%.c include/telltale.h $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g -D_GNU_SOURCE -Iinclude -pthread $(WARN) $(SANFLAGS) -o $@ $< \
		$(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS) -lsqlite3
