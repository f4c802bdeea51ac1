# meshproxy: the two commands of the README (make demo, make test) and the rest.
# Every target creates .venv and installs what it needs on a fresh Debian machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
APT_STAMP := $(VENV)/.debs
NODE_STAMP := $(VENV)/.node24
DEBS   := curl haproxy nginx-light wrk nghttp2-client iptables tcpdump libnghttp2-dev chromium
# chromium: the independent HTTP/3 peer of tests/integration/test_quic_chromium.py.

.PHONY: demo demo-pods test test-twins fuzz lint bench bench-quick bench-publish debs proto stats-doc clean image image-base image-debs

# libnghttp2's headers go in before the build (they are in DEBS too); without them the HTTP/2
# codec's pure-Python twin runs.
$(STAMP): pyproject.toml setup.py $(shell find meshproxy -name "*.pyx")
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@[ -f /usr/include/nghttp2/nghttp2.h ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q libnghttp2-dev; } || \
	  echo "libnghttp2-dev is not installed: HTTP/2 will run on its pure-Python codec"
	$(PIP) install -q --upgrade pip setuptools wheel Cython
	$(PIP) install -q --no-build-isolation -e '.[test,bench]'
	# xds-protos ships an older copy of opentelemetry's protos (no InstrumentationScope); whichever
	# package pip installs last wins, so opentelemetry-proto's own files go in again, last.
	$(PIP) install -q --force-reinstall --no-deps "$$($(PY) -c 'import importlib.metadata as m; print("opentelemetry-proto==" + m.version("opentelemetry-proto"))')"
	touch $@

# Debian packages: curl for the tests' independent client, tcpdump for the pod tests' wire
# evidence, the comparison proxies and load generators for the benchmarks, libnghttp2's headers
# for the compiled HTTP/2 codec. Skipped when already present.
$(APT_STAMP):
	@missing=""; for c in curl haproxy nginx wrk h2load iptables-restore tcpdump; do \
	  command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	[ -f /usr/include/nghttp2/nghttp2.h ] || missing="$$missing nghttp2.h"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(DEBS); \
	fi
	@mkdir -p $(VENV) && touch $@

debs: $(APT_STAMP)

# Node.js 24 (it bundles OpenSSL 3.5) from the npm registry: the independent TLS peer of the
# interop tests. Debian's own Node is older and has no ML-KEM.
$(NODE_STAMP):
	@command -v npm >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q npm; }
	@mkdir -p $(VENV)/node
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node node@24
	touch $@

demo: $(STAMP)
	$(PY) -m controlplane.demo

# The same story in network-namespace pods with transparent sidecars (needs root; iproute2, iptables).
demo-pods: $(STAMP) $(APT_STAMP)
	$(PY) -m controlplane.demo --pods

# Most tests wait on sockets and child processes, not on the CPU: four pytest-xdist workers
# take the suite from over half an hour to about seven minutes on two cores. The pods tests
# (tests/e2e) share one worker: they share namespace names, iptables and the image store.
TEST_WORKERS ?= 4

test: $(STAMP) $(APT_STAMP) $(NODE_STAMP) image-debs
	$(VENV)/bin/ruff check meshproxy controlplane tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The suite once more with every dispatcher on its pure-Python twin (DESIGN decision 5); CI runs
# it after `make test`. The twin suites still import both twins directly.
test-twins: $(STAMP) $(APT_STAMP) $(NODE_STAMP)
	MESHPROXY_NO_EXTENSIONS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# Coverage-guided fuzzing (docs/fuzzing.md): each target in turn for FUZZ_SECONDS, one process at a
# time, at FUZZ_NICE; new inputs go to .fuzz/<target>/ (minimise the interesting ones into
# tests/fuzz/corpus/), crashes to .fuzz/crash-<target>-*. Every run is appended to the ledger
# (tests/fuzz/ledger.jsonl) and the totals in docs/fuzzing.md are regenerated: commit both.
# `make test` runs the short, seeded version (tests/fuzz).
FUZZ_SECONDS ?= 600
FUZZ_NICE ?= 19
FUZZ_TARGETS ?= http1_request http1_response http2_frames xfcc bootstrap bootstrap_proto mesh mesh_doc xds

fuzz: $(STAMP)
	@status=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p .fuzz/$$t; \
	  nice -n $(FUZZ_NICE) $(PY) -m tests.fuzz $$t .fuzz/$$t tests/fuzz/corpus/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -artifact_prefix=.fuzz/crash-$$t- || { status=1; break; }; \
	done; \
	$(PY) -m tests.fuzz.ledger --write-doc; $(PY) -m tests.fuzz.ledger; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check meshproxy controlplane tests benchmarks
	$(VENV)/bin/ruff format --check meshproxy controlplane tests benchmarks

bench: $(STAMP) $(APT_STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP) $(APT_STAMP)
	$(PY) -m benchmarks --quick

# The container image (deploy/Containerfile, docs/image.md) with podman, buildah or docker:
# `make image` on the official Python slim base, `make image-base image BASE=localhost/meshproxy-base`
# on a Debian base made here with mmdebstrap (no image registry needed).
IMAGE ?= localhost/meshproxy
BASE ?=

image:
	BASE=$(BASE) deploy/image.sh build $(IMAGE)

image-base: image-debs
	deploy/image.sh base localhost/meshproxy-base

# podman and mmdebstrap for the image tests (tests/e2e/test_image.py), which run only as root:
# only root installs them, and only when missing, so `make test` costs nothing more otherwise.
image-debs:
	@if [ "$$(id -u)" = 0 ] && ! { command -v podman && command -v mmdebstrap; } >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman mmdebstrap; fi

# Runs write to benchmarks/results/runs/<timestamp>/ (ignored by git); this puts one of them into
# the committed benchmarks/results/ and rebuilds its REPORT.md and plots.
bench-publish: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make bench-publish RUN=benchmarks/results/runs/<timestamp>"; exit 2; }
	$(PY) -m benchmarks publish $(RUN)

# Regenerate docs/stats.md from the stat tables in meshproxy/stats.py (a unit test checks it).
stats-doc: $(STAMP)
	$(PY) -m meshproxy.stats > docs/stats.md

# Regenerate meshproxy/_gen from proto/ (the generated code is committed; see proto/README.md).
proto: $(STAMP)
	$(PIP) install -q grpcio-tools==1.85.1
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) build *.egg-info meshproxy/**/*.so
