# corral's build and test entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORRAL := $(VENV)/bin/corral
# The kernel suite runs in one boot of `corral machine` (real cgroup v2, scratch disk).
MACHINE_OPTS ?= --memory 2G --cpus 2 --disk 512M --timeout 2700
PYTEST_KERNEL_OPTS ?= -p no:cacheprovider -q

.PHONY: test setup peers lint unit kernel e2e fixtures clean

test: lint unit kernel e2e

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Python packages into the venv, then Debian's qemu, kernel and busybox where missing.
setup: $(VENV)/.installed peers
	$(CORRAL) machine setup

# Debian's peers and tools the tests run against: prometheus and promtool (exporter golden
# file, e2e), debootstrap (`corral rootfs debian` and its e2e test), tmux (`corral top` driven
# as a person would), runc, crun and umoci (OCI parity and bench), nftables (published ports).
PEERS := prometheus debootstrap tmux runc crun umoci nftables
PEER_COMMANDS := promtool debootstrap tmux runc crun umoci nft
peers:
	@missing=; for c in $(PEER_COMMANDS); do command -v $$c >/dev/null || missing=$$c; done; \
	[ -z "$$missing" ] || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PEERS); }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q

kernel: setup
	$(CORRAL) machine run $(MACHINE_OPTS) -- $(PY) -m pytest tests/kernel $(PYTEST_KERNEL_OPTS)

# Real peers and whole commands, booted for real (corral machine itself, ...).
e2e: setup
	$(PY) -m pytest tests/e2e -q -p no:cacheprovider

# Re-capture the fixture trees from the machine's real kernel (see tools/capture_fixtures.py).
fixtures: setup
	$(CORRAL) machine run $(MACHINE_OPTS) --out $(CURDIR)/tests/fixtures -- \
		$(PY) tools/capture_fixtures.py $(CURDIR)/tests/fixtures/cgroupfs

# Benchmarks (not part of `make test`): the C floor is compiled here, the measurements run in
# one boot of the machine and write bench/out/results.json, then BENCHMARKS.md is written here.
BENCH_OPTS ?=
.PHONY: bench
bench: setup
	mkdir -p bench/out
	gcc -O2 -Wall -Wextra -o bench/out/floor_read bench/floor_read.c
	$(PY) bench/recording_size.py bench/out/recording_host.json
	cd bench && ../$(PY) native_cpu.py out/native_cpu.json --floor out/floor_read
	$(CORRAL) machine run --memory 2G --cpus 2 --timeout 3600 --out $(CURDIR)/bench/out -- \
		$(PY) bench/monitor_bench.py --out $(CURDIR)/bench/out \
		--floor $(CURDIR)/bench/out/floor_read $(BENCH_OPTS)
	$(CORRAL) machine run --memory 2G --cpus 2 --disk 1G --timeout 1800 --out $(CURDIR)/bench/out -- \
		$(PY) bench/enforce_machine_bench.py --out $(CURDIR)/bench/out
	$(PY) bench/enforce_bench.py bench/out/enforce_sim.json \
		--recording bench/out/machine.corral --under corral
	$(PY) bench/oci_bench.py --out bench/out --runtimes corral runc --name oci_host
	$(CORRAL) machine run --memory 2G --cpus 2 --timeout 4200 --out $(CURDIR)/bench/out -- \
		$(PY) bench/oci_bench.py --out $(CURDIR)/bench/out
	$(PY) bench/report.py bench/out/results.json BENCHMARKS.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The generated references (corral/docs.py): docs/cli.md from the commands, docs/policy.md from
# the policy schema, docs/metrics.md from the metrics catalogue. tests/unit/test_docs_generated.py
# fails until this is run after a change to any of them.
.PHONY: docs
docs: $(VENV)/.installed
	$(PY) -m corral.docs

# The demo (corral demo): in a corral machine on hosts without cgroup v2 controllers. With
# CORRAL_DEMO_HEADLESS=1 it runs 90 s without the dashboard and prints a summary.
DEMO_OPTS ?=
.PHONY: demo
demo: setup
	$(CORRAL) demo $(if $(filter 1,$(CORRAL_DEMO_HEADLESS)),--headless --duration 90) $(DEMO_OPTS)
