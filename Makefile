# The two commands a new user types: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-fast smoke clean

setup: $(STAMP)

# One pip install for everything, torch included, so pip takes the pinned CPU wheel
# rather than a multi-GB CUDA build. Re-runs when pyproject.toml changes. --no-compile, then one
# import of every module a command uses with bytecode writing on: the ~3,000 modules adapterxfer
# needs are compiled once (where PYTHONDONTWRITEBYTECODE is set, every command would otherwise
# recompile them), not pip's 17,000 (30 s instead of 90 s for the install).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -e '.[test]'
	PYTHONDONTWRITEBYTECODE= $(PY) -m adapterxfer.warm
	touch $(STAMP)

# The study explores on half of the test chapters, then `study confirm` runs the primary contrast once more on
# new seeds and the held-out half (a second `make demo` resumes both and rescores nothing it has).
demo: setup
	$(VENV)/bin/adapterxfer study run configs/demo.yaml
	$(VENV)/bin/adapterxfer study confirm configs/demo.yaml

# Two workers: the suite's tests time nothing, and each worker builds its own tiny backbone.
test: setup
	$(PY) -m pytest -q -n 2

# Unit tests only: no me5-small, no real corpus, no test marked slow.
test-fast: setup
	$(PY) -m pytest -q -n 2 -m "not e2e and not slow"

# configs/xstilts.yaml in miniature: every phase once, on the tiny backbone and the XTREME fixtures (see RESULTS.md).
smoke: setup
	ADAPTERXFER_DATA_DIR=tests/fixtures/xtreme HF_HUB_OFFLINE=1 $(VENV)/bin/adapterxfer study run configs/xstilts.yaml \
		--smoke --backbone tiny-xlmr

clean:
	rm -rf $(VENV) artifacts/demo
