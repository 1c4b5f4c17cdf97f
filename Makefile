# `make demo` and `make test` each prepare the machine themselves (scripts/setup.sh).
.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/passthru demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python bench/discovery.py
	.venv/bin/python bench/scheduler.py
	.venv/bin/python bench/boot.py
	.venv/bin/python bench/reports.py
