# Micro-threads for CPython: build the patched interpreter and run the tests.
#
#   make                 build the patched interpreter as build/python
#   make demo            ... and run a small demonstration
#   make test            run every test the project has (what CI runs)
#   make baseline        build unpatched 3.13.5 with the same flags: build/python-stock
#   make debug | asan    debug (--with-pydebug) or AddressSanitizer variants
#   make regrtest        CPython's whole regression suite, patched vs stock
#   make refleaks        the micro-thread regrtest modules with -R 3:3 on the debug build
#   make perf            the pyperf suite (see perf/README.md)
#   make patches         turn commits made in build/src back into cpython-patch/
#   make reset-tree      throw away build/src (and its edits); the next make re-makes it
#   make clean           remove build/
#
# The CPython tarball comes from $(CPYTHON_TARBALL), else a download cache,
# else python.org; see cpython-patch/README.md.

BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
export JOBS CPYTHON_TARBALL

PY := $(BUILD)/python
PY_STOCK := $(BUILD)/python-stock
VENV := $(BUILD)/venv
VENV_STOCK := $(BUILD)/venv-stock
REQS := tests/requirements.txt
DOC_REQS := tools/pep-sphinx/requirements.txt

.PHONY: all python demo debug asan baseline venvs test test-native test-stock \
	regrtest-modules docs regrtest refleaks perf patches reset-tree clean

all: python

# The build scripts decide what is out of date (tree, configure, objects), so
# these targets always run them; a no-op rebuild takes seconds.
python:
	@cpython-patch/build.sh release $(BUILD)
debug:
	@cpython-patch/build.sh debug $(BUILD)
asan:
	@cpython-patch/build.sh asan $(BUILD)
baseline:
	@cpython-patch/build.sh stock $(BUILD)

demo: python
	@echo "==> running examples/demo.py on $(PY)"
	@$(PY) examples/demo.py

# Test environments: a venv of each interpreter with the pinned test tools.
$(VENV)/.installed: $(REQS) $(DOC_REQS) | python
	@echo "==> making $(VENV) (pytest, hypothesis, pyperf, sphinx)"
	@rm -rf $(VENV) && $(PY) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r $(REQS) -r $(DOC_REQS)
	@touch $@
$(VENV_STOCK)/.installed: $(REQS) | baseline
	@echo "==> making $(VENV_STOCK) (pytest, hypothesis, pyperf)"
	@rm -rf $(VENV_STOCK) && $(PY_STOCK) -m venv $(VENV_STOCK)
	@$(VENV_STOCK)/bin/python -m pip install -q --disable-pip-version-check -r $(REQS)
	@touch $@
venvs: $(VENV)/.installed $(VENV_STOCK)/.installed

# Everything, with the patched interpreter's pytest run last: its summary
# line ends the output.
test: python baseline venvs
	@$(MAKE) --no-print-directory regrtest-modules docs test-stock test-native

# CPython-style unittest modules this project adds to Lib/test/.
regrtest-modules: python
	@mods=$$(cd Lib/test 2>/dev/null && ls test_micro_thread*.py 2>/dev/null | sed 's/\.py$$//'); \
	if [ -n "$$mods" ]; then \
		echo "==> regrtest: $$mods"; $(PY) -m test --timeout 600 $$mods; \
	else echo "==> regrtest: no modules yet"; fi

# The shim on stock 3.13.5 (the native implementation is absent there).
test-stock: $(VENV_STOCK)/.installed
	@echo "==> pytest on stock 3.13.5 (shim)"
	@PYTHONPATH=$(CURDIR)/Lib $(VENV_STOCK)/bin/python -m pytest -q -p no:cacheprovider tests

test-native: $(VENV)/.installed
	@echo "==> pytest on the patched interpreter (native and shim)"
	@$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# The PEP, rendered with Sphinx; any warning fails.
docs: $(VENV)/.installed
	@echo "==> rendering PEP.rst into $(BUILD)/pep-html"
	@$(VENV)/bin/python -m sphinx -q -W -b html -c tools/pep-sphinx . $(BUILD)/pep-html

regrtest: python baseline
	@cpython-patch/regrtest.sh $(BUILD)

refleaks: debug
	@mods=$$(cd Lib/test && ls test_micro_thread*.py | sed 's/\.py$$//'); \
	$(BUILD)/python-debug -m test -R 3:3 $$mods

perf: python baseline
	@$(MAKE) --no-print-directory -C perf BUILD=$(abspath $(BUILD))

patches:
	@cpython-patch/regen-patches.sh $(BUILD)

reset-tree:
	rm -rf $(BUILD)/src $(BUILD)/.src.tmp $(BUILD)/release $(BUILD)/debug $(BUILD)/asan

clean:
	rm -rf $(BUILD)
