# The dashboard (issue 6). web/src holds the page's sources (plain JavaScript modules and CSS);
# uPlot comes from npm (web/package-lock.json) and is not committed. tools/embed_assets.c turns
# the files listed in web/assets.txt into $(ASSETS_GEN) (web/assets_gen.c), a generated file
# that is committed beside its manifest, outside src/, and compiled into `telltale serve`:
# building the binary needs neither node nor npm. After changing a file under web/, run
# `make assets`; the test assets_generated_file_is_up_to_date fails until then.
#
# The browser test (tests/browser, playwright-core from npm with its lock file, Debian's
# chromium) runs from tests/integration/test_dashboard.c; `make test` installs both npm trees
# with `npm ci` when their node_modules are missing.

EMBED_ASSETS := $(BUILD)/tools/embed_assets
WEB_MODULES := web/node_modules/.package-lock.json
BROWSER_MODULES := tests/browser/node_modules/.package-lock.json

.PHONY: assets

$(EMBED_ASSETS): tools/embed_assets.c | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g -D_GNU_SOURCE $(WARN) -o $@ $<

$(WEB_MODULES): web/package.json web/package-lock.json | $(DEPS_TEST)
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(BROWSER_MODULES): tests/browser/package.json tests/browser/package-lock.json | $(DEPS_TEST)
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

assets: $(EMBED_ASSETS) $(WEB_MODULES)
	$(EMBED_ASSETS) web/assets.txt $(ASSETS_GEN)

# `make test` needs the generator (to check the committed file) and both npm trees.
$(RUNNER): | $(EMBED_ASSETS) $(WEB_MODULES) $(BROWSER_MODULES)

# The agent of the browser test.
DASHBOARD_FEEDER := $(BUILD)/tests/dashboard_feeder

$(DASHBOARD_FEEDER): tests/drivers/dashboard_feeder.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g -D_GNU_SOURCE -Iinclude -pthread $(WARN) $(SANFLAGS) -o $@ $< \
		$(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS)

$(RUNNER): | $(DASHBOARD_FEEDER)
