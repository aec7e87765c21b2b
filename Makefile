# The two commands a new user types: `make demo` and `make test`. Each sets up what it needs itself.
# Two environments (README "Install"): .venv, the core (transformers 5), and .venv-adapters, the core
# plus the [adapters] extra (AdapterHub regimes; transformers 4.57). Their exact versions are the lock
# files requirements/core.txt and requirements/adapters.txt.
PYTHON   ?= python3
VENV     := .venv
ADAPTERS := .venv-adapters
PIP      := pip install --disable-pip-version-check -q --no-compile
UV       := uv==0.13.10
# Where the lock files' CPU build of torch comes from: pip's configured find-links where a machine has them,
# else PyTorch's CPU index (uv reads no pip configuration)
FIND_LINKS = $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
TORCH    = $(if $(FIND_LINKS),$(foreach f,$(FIND_LINKS),--find-links $(f)),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
DEMO     := $(VENV)/bin/adapterxfer

.PHONY: setup demo test test-fast smoke clean

# The two environments install side by side (each is mostly one busy core: unpacking, then compiling bytecode).
setup:
	$(MAKE) -j2 $(VENV)/.installed-stamp $(ADAPTERS)/.installed-stamp

# uv installs the lock file into the venv (pip's resolving and unpacking took about two minutes an environment,
# uv seconds, from its cache in ~/.cache/uv), then adapterxfer itself, editable (built with the lock's
# setuptools). No bytecode at install; then one import of every module a command uses with bytecode writing
# on: the ~3,000 modules adapterxfer needs are compiled once (where PYTHONDONTWRITEBYTECODE is set, every
# command would otherwise recompile them), not the 17,000 installed.
define install
	$(PYTHON) -m venv $(1)
	$(1)/bin/$(PIP) $(UV)
	$(1)/bin/uv pip install -q --python $(1)/bin/python $(TORCH) -r $(2)
	$(1)/bin/uv pip install -q --python $(1)/bin/python --no-deps --no-build-isolation -e .
	PYTHONDONTWRITEBYTECODE= $(1)/bin/python -m adapterxfer.warm
	touch $(1)/.installed-stamp
endef

$(VENV)/.installed-stamp: pyproject.toml requirements/core.txt
	$(call install,$(VENV),requirements/core.txt)

$(ADAPTERS)/.installed-stamp: pyproject.toml requirements/adapters.txt
	$(call install,$(ADAPTERS),requirements/adapters.txt)

# The study explores on half of the test chapters, then confirms its primary contrast once on new seeds and the
# held-out half, in one process (a second `make demo` resumes both and rescores nothing it has).
demo: $(VENV)/.installed-stamp
	$(DEMO) study run configs/demo.yaml --then-confirm

# The whole suite in the core environment (tests marked `adapters` skip there) and, side by side with it, those
# tests in the adapters environment, whose output follows; tests marked `either_env` (the fault battery and the
# SLURM executor's, which need nothing of the extra) run there too, not in the core environment, so
# the two suites take about as long. Side by side, each fills the moments the other leaves a core idle (tests
# that wait on processes they start or kill). The suite's tests time nothing; each worker builds its own tiny
# backbone.
test: setup
	@$(ADAPTERS)/bin/python -m pytest -q -n 1 -m "adapters or either_env" > $(ADAPTERS)/test.log 2>&1 & adapters=$$!; \
	echo "make test: the adapters environment's tests run beside these; their output follows"; \
	$(VENV)/bin/python -m pytest -q -n 2 -m "not either_env" --durations=15; core=$$?; \
	wait $$adapters; adapters=$$?; echo "== .venv-adapters: pytest -m adapters"; cat $(ADAPTERS)/test.log; \
	exit $$((core || adapters))

# Unit tests only, in the core environment: no me5-small, no real corpus, no test marked slow.
test-fast: $(VENV)/.installed-stamp
	$(VENV)/bin/python -m pytest -q -n 2 -m "not e2e and not slow"

# configs/xstilts.yaml in miniature: every phase once, on the tiny backbone and the XTREME fixtures (see RESULTS.md).
smoke: $(ADAPTERS)/.installed-stamp
	ADAPTERXFER_DATA_DIR=tests/fixtures/xtreme HF_HUB_OFFLINE=1 $(ADAPTERS)/bin/adapterxfer study run configs/xstilts.yaml \
		--smoke --backbone tiny-xlmr

clean:
	rm -rf $(VENV) $(ADAPTERS) artifacts/demo
