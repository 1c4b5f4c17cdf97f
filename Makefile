# `make demo` and `make test` each prepare the machine themselves (scripts/setup.sh).
.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/passthru demo

# Four pytest workers even on two cores: many tests spend their time waiting on a
# controller, agents, guests or timers rather than computing.
test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -n 4 --dist load --maxschedchunk 1

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

# Small sizes, a few minutes in all; each script's docstring gives the full-size run.
bench: setup
	.venv/bin/python bench/discovery.py
	.venv/bin/python bench/scheduler.py --quick
	.venv/bin/python bench/e2e.py --hosts 100 --agents 20 --vms 1000 --clients 8 --latency-vms 20
	.venv/bin/python bench/boot.py
	.venv/bin/python bench/reports.py --quick
	.venv/bin/python bench/ledger.py --rounds 10
	.venv/bin/python bench/boot_path.py --quick
	.venv/bin/python bench/orders.py --hosts 2000 --boots 64
	.venv/bin/python bench/views.py --quick
	.venv/bin/python bench/cli_start.py --runs 11
