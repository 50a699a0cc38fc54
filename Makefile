# Tasks of the course. The two commands a fresh machine needs are:
#   make book            # set up, fetch data, execute every chapter (PROFILE=full), build the HTML book
#   make test            # set up and run the whole test suite (unit tests, fast-profile run, book build)
# Variables: PROFILE=fast|full, FORCE=1 (re-run unchanged chapters), JOBS=2 (chapters at a time; numbers
# unchanged, timings then those of a shared CPU), PYTHON=python3.11, VENV=.venv, MEDIMG_DATA_DIR=<mirror of the data>.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= full
JOBS ?= 1
# make test runs two chapters at a time (about a third less wall time on 2 cores; the same numbers)
TEST_JOBS ?= 2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: env data run book test test-jax test-torch backends unit lint format dev student grade lab clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the course pins Python 3.11; run make PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

env: $(STAMP)

data: env
	$(PY) -m utils.data fetch --used

# A chapter whose inputs are unchanged since its last successful run (same profile and backend) is
# reused, not re-executed; `make book FORCE=1` re-runs every chapter.
run: data
	$(PY) -m utils.run --profile $(PROFILE) --jobs $(JOBS) $(if $(FORCE),--force)

book: run
	$(PY) -m utils.book

# The unit tests of the modules that build or train Keras models, and of the exercise checks (which run the
# reference solutions' approach and wrong answers), run a second time on the JAX backend (TensorFlow-only steps
# skip themselves there with the reason).
KERAS_TESTS := tests/test_classify.py tests/test_segment.py tests/test_detect.py tests/test_gan.py \
	tests/test_quality.py tests/test_privacy.py tests/test_scale.py tests/test_metrics.py \
	tests/test_course.py tests/test_determinism.py tests/test_backends.py $(wildcard tests/test_checks_ch*.py)

JAX_TESTS := KERAS_BACKEND=jax $(PY) -m pytest -m "not slow" $(KERAS_TESTS)
# Every chapter under the fast profile on another backend, into build/<backend> (the book reads build/, the
# TensorFlow run of `pytest`); the runner exits non-zero, naming the notebook and cell, if a chapter fails.
CHAPTERS_ON = KERAS_BACKEND=$(1) $(PY) -m utils.run --profile fast --jobs $(TEST_JOBS) --build-dir build/$(1)

# The student edition of every chapter, run top to bottom through the class grader. `make test` runs it on JAX,
# where it is also the test that the chapters' lessons run on that backend (the TensorFlow pass executes the
# teacher's chapters, solutions included). Running the teacher's chapters on JAX as well (`make test-jax`) would add
# about 17 min to CI (16.6 min in its run of 2026-12-02).
STUDENT_RUN := tests/test_pipeline.py::test_the_student_edition_runs_top_to_bottom_and_reports_every_exercise_not_attempted

test: lint
	JOBS=$(TEST_JOBS) $(PY) -m pytest --durations=15 --deselect $(STUDENT_RUN)
	$(JAX_TESTS) --durations=10
	KERAS_BACKEND=jax JOBS=$(TEST_JOBS) $(PY) -m pytest --durations=5 $(STUDENT_RUN)

# ruff over utils/, tests/ and the notebooks (configured in pyproject.toml); `make format` rewrites.
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# For contributors: the pre-commit hooks (.pre-commit-config.yaml) and the git diff driver that shows
# notebooks as MyST text (CONTRIBUTING, 'Reviewing notebooks').
dev: env
	$(VENV)/bin/pre-commit install
	git config diff.jupytext.textconv "$(abspath $(VENV))/bin/jupytext --to myst -o -"
	git config diff.jupytext.cachetextconv true

test-jax: env
	$(JAX_TESTS)
	$(call CHAPTERS_ON,jax)

# The same unit tests on the PyTorch backend (torch is installed on demand from requirements-torch.txt).
test-torch: env
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet -r requirements-torch.txt
	KERAS_BACKEND=torch $(PY) -m pytest -m "not slow" $(KERAS_TESTS)
	$(call CHAPTERS_ON,torch)

# The same chapters (ONLY=02 for chapter 2 alone) on TensorFlow, JAX and PyTorch in one go, and their wall
# times side by side with the ratio to TensorFlow (build/backends/<backend>/run_report.json).
ONLY ?=
backends: env
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet -r requirements-torch.txt
	for b in tensorflow jax torch; do \
	  KERAS_BACKEND=$$b $(PY) -m utils.run --profile $(PROFILE) --force --build-dir build/backends/$$b $(if $(ONLY),--only $(ONLY)) || exit 1; \
	done
	$(PY) -m utils.run --compare build/backends/tensorflow/run_report.json build/backends/jax/run_report.json \
	  build/backends/torch/run_report.json

unit: env
	$(PY) -m pytest -m "not slow"

student: env
	$(PY) -m utils.student

# Grade a class: every returned notebook under SUBMISSIONS (one folder per student), results in grades/.
SUBMISSIONS ?= submitted
grade: env
	$(PY) -m utils.grade $(SUBMISSIONS)

# JupyterLab on the chapters, with the course's environment as the kernel (the notebooks import utils).
lab: env
	$(PY) -m jupyter lab --ServerApp.root_dir=notebooks

clean:
	rm -rf build student grades
