# Two commands on a fresh clone: `make run` and `make test`.
# PYTHON picks the interpreter (default python3; e.g. PYENV_VERSION=3.12.1 make test PYTHON=python3.12).
PYTHON ?= python3
VENV ?= .venv
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CONSTRAINTS := constraints/py$(PYVER).txt
STAMP := $(VENV)/.installed-py$(PYVER)
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test bench venv clean lint

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')" != "$(PYVER)" ]; then \
		echo "recreating $(VENV) for Python $(PYVER)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	@rm -f $(VENV)/.installed-py*; touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m sim $(ARGS)

# the suite on WORKERS processes (pytest-xdist; a test module stays on one worker, so its fixtures run once)
WORKERS ?= 2
test: $(STAMP) chromium solara-assets
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile $(ARGS)

bench: $(STAMP)
	$(PY) bench/run_bench.py $(ARGS)

# The Ray launcher (hydra/launcher=ray_local, README: Launchers and devices): installs the extra distributed
# (hydra-ray-launcher, ray[default]: 45 more packages, pinned in $(CONSTRAINTS)) into $(VENV) and runs
# tests/test_launchers.py, its slow Ray sweep included (slow tests are never deselected here). `make test`
# installs only [test], where the Ray tests skip; once this has run, `make test` runs them too.
DIST_STAMP := $(VENV)/.installed-distributed-py$(PYVER)
$(DIST_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test,distributed]'
	touch $@

.PHONY: test-distributed
test-distributed: $(DIST_STAMP)
	$(PY) -m pytest -q tests/test_launchers.py $(ARGS)

# The dashboard (sim/mesa_model/app.py, README: Dashboard) on http://$(VIZ_HOST):$(VIZ_PORT)
VIZ_HOST ?= 127.0.0.1
VIZ_PORT ?= 8765
.PHONY: viz chromium solara-assets
viz: $(STAMP) solara-assets
	$(VENV)/bin/solara run sim.mesa_model.app --host $(VIZ_HOST) --port $(VIZ_PORT) --production --no-open $(ARGS)

# The dashboard's browser test (tests/test_dashboard.py) drives Debian's Chromium, never a downloaded
# browser: install the package where it is missing. Never fails: without apt-get as root the test skips.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian's chromium for tests/test_dashboard.py"; \
			apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
			|| echo "chromium: apt-get could not install it; tests/test_dashboard.py will skip"; \
		else echo "chromium: /usr/bin/chromium missing and no apt-get as root; tests/test_dashboard.py will skip"; fi; \
	fi

# Solara's page loads its front-end files from a CDN through a cache in the venv
# ($(VENV)/share/solara/cdn); fill that cache from the npm registry so the dashboard renders offline
# (CI). The packages are the versions the pinned solara (1.64) asks for with ipyvuetify 1.x.
SOLARA_CDN := $(VENV)/share/solara/cdn
SOLARA_ASSETS := @widgetti/solara-vuetify-app@10.1.1 @widgetti/vue-grid-layout@2.3.13-alpha.2 requirejs@2.3.6 font-awesome@4.5.0
solara-assets: $(SOLARA_CDN)/.filled
$(SOLARA_CDN)/.filled: $(STAMP)
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "solara-assets: no npm; the dashboard fetches its front-end files from the CDN when it first serves them"; \
	else ok=1; for spec in $(SOLARA_ASSETS); do \
		dest="$(SOLARA_CDN)/$$spec"; [ -f "$$dest/package.json" ] && continue; \
		tmp=$$(mktemp -d); \
		if (cd "$$tmp" && npm pack --silent "$$spec" >/dev/null 2>&1) && mkdir -p "$$dest" \
			&& tar xzf "$$tmp"/*.tgz -C "$$dest" --strip-components=1; then echo "solara-assets: $$spec"; \
		else ok=0; rm -rf "$$dest"; echo "solara-assets: npm pack $$spec failed"; fi; \
		rm -rf "$$tmp"; done; [ $$ok = 1 ] && touch $@ || true; fi

# docs/figures/*.png: one small run per experiment drawn by its own figure writer (README: Gallery);
# ARGS="tissue_bio cascade" redraws some entries
.PHONY: figures
figures: $(STAMP)
	$(PY) docs/gallery.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
