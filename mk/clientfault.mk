# The driver of tests/integration/test_clientfault.c (S5, S7, S14 of docs/reliability.md): an
# agent linked against libtelltale.a with the library's allocator, getaddrinfo, clock_gettime
# and connect calls wrapped by the linker, so the test makes them fail, hang or lie without a
# hook in the library.
CLIENT_FAULTS_DRIVER := $(BUILD)/tests/client_faults
CLIENT_FAULTS_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc \
	-Wl,--wrap=mmap,--wrap=getaddrinfo,--wrap=clock_gettime,--wrap=connect

$(CLIENT_FAULTS_DRIVER): tests/drivers/client_faults.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g -D_GNU_SOURCE -Iinclude -pthread $(WARN) $(SANFLAGS) -o $@ $< \
		$(CLIENT_FAULTS_WRAP) $(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS)

$(RUNNER): | $(CLIENT_FAULTS_DRIVER)
