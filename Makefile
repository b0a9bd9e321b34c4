# metacompress: every command a user needs. `make help` lists them.
# PROFILE = smoke (tests, minutes) | quick (default, real CIFAR-10 on a 2-core CPU) | paper (GPU, the paper's scale)
PROFILE ?= quick
PYTHON  ?= python3
FORCE   ?=
ENGINE  ?=
VERBOSE ?=
JOBS    ?=
STEPS   := data finetune generate compress extract predict evaluate recommend
STAMP   := .make/installed
# glibc malloc: no mmap'd chunks, no trimming (core.MALLOC_ENV: the same numbers at 41 % less CPU in the grid's cells; make bench-malloc)
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
RUN     := $(PYTHON) -c 'from metacompress.run import main; main()'
# VERBOSE=1: also the notebooks' printed output and a failing step's full traceback; JOBS=n: steps of `reproduce` side by side
FLAGS    = $(if $(FORCE),--force) $(if $(ENGINE),--engine $(ENGINE)) $(if $(VERBOSE),--verbose)

.PHONY: help install test test-nbs test-py check-sync reproduce restore-cells check docs bench bench-eval bench-recovery bench-malloc bench-ray readme lab clean-runs clean-cache $(STEPS)

help:  ## this list
	@grep -E '^[a-z][a-zA-Z_ -]*:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 22

$(STAMP): settings.ini setup.py
	$(PYTHON) -m pip install -q -e ".[dev,ray]"
	@mkdir -p .make && touch $@

install: $(STAMP)  ## pip install the package and its test tools (editable)

test: install test-nbs test-py check-sync  ## install, then nbdev_test + pytest + export/clean sync check

test-nbs: install  ## run the notebooks' fast cells (cells flagged `slow` are skipped)
	nbdev_test --n_workers 2 --do_print

test-py: install  ## pytest: unit tests and the smoke pipeline through papermill
	$(PYTHON) -m pytest -q -n 2 --dist loadgroup --durations=15 tests

check-sync: install  ## nbdev_export and nbdev_clean must change nothing
	@$(RUN) check-sync

reproduce: install  ## every pipeline notebook (independent steps side by side, JOBS=cores), then the manifest check (PROFILE=quick by default)
	@$(RUN) all --profile $(PROFILE) $(FLAGS) $(if $(JOBS),--jobs $(JOBS))

restore-cells: install  ## seed PROFILE's extract cache from figures/PROFILE/ (after make data finetune generate; 3 cells recomputed and compared first), so a clone reruns predict/evaluate/recommend without the grid
	@$(PYTHON) -c 'from metacompress.extract import restore_main; restore_main()' --profile $(PROFILE)

check: install  ## check figures/PROFILE/ against nbs/manifest.yaml and the run record (missing or stale files, failed or interrupted steps fail)
	@$(RUN) check --profile $(PROFILE)

docs: install  ## static HTML site of PROFILE's executed notebooks in data/site/PROFILE/ (quick: also copies them to docs/quick/)
	$(RUN) docs --profile $(PROFILE)

$(STEPS): install  ## one step of the pipeline: make data|finetune|generate|compress|extract|predict|evaluate|recommend PROFILE=... (VERBOSE=1)
	@$(RUN) $@ --profile $(PROFILE) $(FLAGS)

bench-ray: install  ## Ray's per-cell overhead against the local pool on toy cells (prints the ratio)
	$(PYTHON) -c 'from metacompress.ray_engine import bench_main; bench_main()'

bench-eval: install  ## evaluation img/s per zoo member: the grid's logits_of (inference mode, channels-last) over plain no_grad (ratios)
	$(PYTHON) -c 'from metacompress.bench import eval_main; eval_main()'

bench-recovery: install  ## recovery img/s per zoo member (distillation steps, select scoring): channels-last over the default layout (ratios)
	$(PYTHON) -c 'from metacompress.bench import recovery_main; recovery_main()'

bench-malloc: install  ## CPU seconds of zoo members' evaluation + distillation with glibc's default allocator over core.MALLOC_ENV (ratios)
	$(PYTHON) -c 'from metacompress.bench import malloc_main; malloc_main()'

bench: install  ## data-path benchmark: training-loop img/s over bare step img/s (target >= 0.85)
	$(PYTHON) -c 'from metacompress.bench import main; main()'

readme: install  ## execute nbs/index.ipynb (tables from figures/) and regenerate README.md from it
	@$(RUN) readme

lab: install  ## install and open JupyterLab on nbs/
	$(PYTHON) -m pip install -q -e ".[lab]" && jupyter lab nbs

clean-cache: install  ## delete decoded dataset caches in data/cache/ that no split file uses (prints what it frees)
	@$(PYTHON) -c 'from metacompress.data import clean_cache; clean_cache()'

clean-runs:  ## delete executed notebooks of PROFILE (caches and checkpoints stay)
	rm -rf data/runs/$(PROFILE)
