# Two commands from a fresh clone: `make run` and `make test`. Both create .venv (Python 3.10)
# and install the pinned stack with uv the first time, and reuse it afterwards.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= demo_data
OUTPUT ?= outputs
ARGS ?=

.PHONY: run test venv demo-data lock clean

run: $(STAMP)
	@[ -d $(DATA) ] || $(VENV)/bin/fakedetect demo-data $(DATA)
	$(VENV)/bin/fakedetect run --data $(DATA) --output $(OUTPUT) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests $(ARGS)

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
