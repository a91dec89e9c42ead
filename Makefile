# Two commands from a fresh clone: `make run` and `make test` (`make test-fast` runs no pipeline).
# Both create .venv (Python 3.10) and install the pinned stack with uv the first time, and reuse it afterwards.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= demo_data
OUTPUT ?= outputs
ARGS ?=

.PHONY: run test test-fast lint venv demo-data lock clean

run: $(STAMP)
	@[ -d $(DATA) ] || $(VENV)/bin/fakedetect demo-data $(DATA)
	$(VENV)/bin/fakedetect run --data $(DATA) --output $(OUTPUT) $(ARGS)

# The whole suite (CI): lint, then every test, real pipelines included.
test: lint
	$(PY) -m pytest -q tests $(ARGS)

# The fast tier: no pipeline runs (tests marked `pipeline`), under two minutes.
test-fast: lint
	$(PY) -m pytest -q tests -m 'not pipeline' $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo-data: $(STAMP)
	$(VENV)/bin/fakedetect demo-data $(DATA)

venv: $(STAMP)

# Reinstall only when the lock or setup.py change.
$(STAMP): requirements.lock setup.py
	@bash scripts/make_venv.sh $(VENV)
	@touch $(STAMP)

lock:
	uv pip compile -p 3.10 requirements.in -o requirements.lock

clean:
	rm -rf $(OUTPUT) $(DATA)
