# The hand-speaking agent of the identity tests (tests/integration/test_identity.c), run as
# another user with setpriv: it says hello under any agent name and instance and sends batches
# with chosen sequence numbers.
WIRE_AGENT := $(BUILD)/tests/wire_agent

$(WIRE_AGENT): tests/drivers/wire_agent.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g -D_GNU_SOURCE -Iinclude -Isrc -pthread $(WARN) $(SANFLAGS) -o $@ $< \
		$(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS)

$(RUNNER): | $(WIRE_AGENT)
