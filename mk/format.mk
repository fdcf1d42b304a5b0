# clang-format owns whitespace (.clang-format; ../shared/STYLE.md). `make format` rewrites the
# C and C++ sources in place; `make format-check` (run by .ci/run) fails, naming the files, when one
# differs. The version is pinned: another clang-format may lay the same code out differently.
CLANG_FORMAT := clang-format-14
# The generated web/assets_gen.c is not among them.
FORMAT_FILES = $(shell git ls-files 'src/*.c' 'src/*.h' 'include/*.h' 'include/*.hpp' 'tests/*.c' \
	'tests/*.h' 'tests/*.cpp' 'bench/*.c' 'bench/*.h' 'bench/*.cpp' 'tools/*.c' 'examples/*.c' \
	'python/*.c' 2>/dev/null)
DEPS_FORMAT := $(BUILD)/.deps-format

$(DEPS_FORMAT): scripts/install-deps
	@mkdir -p $(@D)
	scripts/install-deps format
	@touch $@

.PHONY: format format-check
format: | $(DEPS_FORMAT)
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check: | $(DEPS_FORMAT)
	@bad=""; for f in $(FORMAT_FILES); do \
		$(CLANG_FORMAT) "$$f" | cmp -s - "$$f" || bad="$$bad $$f"; \
	done; \
	if [ -n "$$bad" ]; then echo "format-check: not as clang-format lays them out (make format):$$bad" >&2; exit 1; fi; \
	echo "format-check: $(words $(FORMAT_FILES)) files as clang-format lays them out"
