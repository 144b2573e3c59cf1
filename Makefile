# Everyday tasks. The README's two commands do the same from a fresh clone.
PY := .venv/bin/python

.venv:
	python3 -m venv .venv

install: .venv
	.venv/bin/pip install -e '.[test,dev]'

test: install
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check federation node broker trust tests
	.venv/bin/mypy federation node broker trust

demo: .venv
	.venv/bin/pip install -q -e .
	.venv/bin/signpost demo

bench:
	.venv/bin/signpost bench matching
	.venv/bin/signpost bench audit
	.venv/bin/signpost bench trust
	.venv/bin/signpost bench federation --nodes 5
	.venv/bin/signpost bench channel

.PHONY: install test lint demo bench
