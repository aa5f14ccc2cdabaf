# The two commands of the README. PYTHON may point at any Python 3.11 interpreter.
PYTHON ?= python3

.PHONY: install demo test bench

install:
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	HF_HUB_OFFLINE=1 $(PYTHON) run.py

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest

bench: install
	HF_HUB_OFFLINE=1 $(PYTHON) benchmarks/overhead.py
