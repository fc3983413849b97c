# logd: `make run` starts the server (dev mode, zero config); `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
FASTPATH := $(VENV)/.fastpath-built
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install build-deps sanitize run test lint typecheck unit unit-pure redis-server soak proto bench bench-valkey clean secrets-push secrets-edit secrets-env \
	wheel lock synth diff deploy deploy-check deploy-check-deps

install: $(STAMP) $(FASTPATH)

# A C compiler, OpenSSL's and Python's headers: the C accept path (setup.py) and the
# benchmark's sender are built with them.
build-deps:
	@command -v gcc >/dev/null && test -f /usr/include/openssl/evp.h || \
		{ echo "==> installing gcc and OpenSSL's headers (apt-get)"; \
		  apt-get update -qq && apt-get install -y -qq gcc libssl-dev; }
	@test -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" || \
		{ echo "==> installing Python's headers (apt-get)"; \
		  apt-get update -qq && apt-get install -y -qq python3-dev; }

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "logd needs Python 3.11 or newer: $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	@echo "==> creating $(VENV) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run`: logd with its server extra only (no CDK, no test tools), the C engine built.
$(RUN_STAMP): pyproject.toml setup.py | build-deps $(BIN)/python
	@echo "==> installing logd[server] and building its C engine (about a minute)"
	$(BIN)/python -m pip install --progress-bar off -e '.[server]'
	touch $(RUN_STAMP) $(FASTPATH)

# `make test` and the rest: the whole dev set. Re-installs when the dependency list changes.
$(STAMP): pyproject.toml setup.py | build-deps $(BIN)/python
	@echo "==> installing logd[dev]: server, AWS, CDK, test and lint tools (a few minutes)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP) $(FASTPATH)

# The C parts (setup.py: the accept path and the chunk search), rebuilt when a source changes.
$(FASTPATH): service/logd/server/ingest/_fastpath.c service/logd/server/store/_search.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(FASTPATH)

run: $(RUN_STAMP) $(FASTPATH)
	$(BIN)/logd serve --udp-addr 127.0.0.1:6102 --http-addr 127.0.0.1:6101

lint: install
	$(BIN)/ruff check setup.py service rotation_lambda infra tests bench
	$(BIN)/ruff format --check setup.py service rotation_lambda infra tests bench

typecheck: install
	$(BIN)/mypy

unit: install redis-server
	$(BIN)/pytest

# The Valkey store's tests start their own redis-server (Debian package) on a free port.
redis-server:
	@command -v redis-server >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server; }

# The web page's tests (tests/test_ui_page.py) drive Debian's Chromium, headless, with
# selenium through chromium-driver; `make screenshots` too.
.PHONY: chromium screenshots bench-ui
chromium:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

unit: chromium

# docs/screenshots/ui.png (README): the page over realistic data from a real `logd serve`.
screenshots: install chromium
	$(BIN)/python -m tests.ui_support docs/screenshots/ui.png

# The Python engine alone, as a LOGD_PURE_PYTHON=1 build runs it: a copy of the package
# without the extension (first on the path), and the tests of ingest and of a real server.
PURE := build/pure
PURE_TESTS := tests/test_engine.py tests/test_accept.py tests/test_replay.py \
	tests/test_fuzz_ingest.py tests/test_fastpath.py tests/test_server_functional.py \
	tests/test_writers.py tests/test_writers_functional.py tests/test_ingest_pacing.py
unit-pure: install
	rm -rf $(PURE) && mkdir -p $(PURE) && cp -r service/logd $(PURE)/
	find $(PURE) -name '*.so' -delete
	PYTHONPATH=$(abspath $(PURE)) LOGD_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider $(PURE_TESTS)

test: lint typecheck unit unit-pure

# The C accept path under AddressSanitizer and UBSan: an instrumented copy of the package in
# build/sanitize, and the tests that drive the C path hardest (a few minutes; not in `make test`).
SANITIZE := build/sanitize
sanitize: install
	rm -rf $(SANITIZE) && mkdir -p $(SANITIZE) && cp -r service/logd $(SANITIZE)/
	rm -f $(SANITIZE)/logd/server/ingest/*.so
	gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -shared -fPIC \
		-I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("include"))')" \
		service/logd/server/ingest/_fastpath.c -lcrypto \
		-o $(SANITIZE)/logd/server/ingest/_fastpath$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
	PYTHONPATH=$(abspath $(SANITIZE)) ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		$(BIN)/pytest -q -s -p no:cacheprovider -o timeout=1800 \
		tests/test_fastpath.py tests/test_fuzz_ingest.py tests/test_server_functional.py \
		tests/test_valkey_fastpath.py

# The overload soak for minutes instead of seconds (make test runs a short one).
soak: install
	SOAK_SECONDS=$${SOAK_SECONDS:-120} $(BIN)/pytest -s -p no:cacheprovider -o timeout=900 \
		tests/test_soak_functional.py

# Regenerate the protobuf code (committed; tests/test_proto_fresh.py fails when it is stale).
proto: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=service/logd/_pb --mypy_out=service/logd/_pb proto/logd.proto

# Benchmark (a few minutes): table on stdout, bench/results.json. BENCH_ARGS="--runs 5" etc.
BENCH_SENDER := bench/build/sender

$(BENCH_SENDER): bench/sender.c | build-deps
	mkdir -p $(dir $@)
	gcc -O2 -Wall -Wextra -o $@ $< -lcrypto

# The reference receiver (the machine's limit): a bare C recvmmsg loop.
BENCH_BARE := bench/build/bare_recv

$(BENCH_BARE): bench/bare_recv.c | build-deps
	mkdir -p $(dir $@)
	gcc -O2 -Wall -Wextra -o $@ $<

bench: install redis-server $(BENCH_SENDER) $(BENCH_BARE)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.valkey_ingest $(BENCH_VALKEY_ARGS)
	$(BIN)/python -m bench.ui_tail $(BENCH_UI_ARGS)

# The web page's live tail: frames/s in headless Chromium at 1,000 events/s (~1 min).
bench: chromium
bench-ui: install chromium $(BENCH_SENDER)
	$(BIN)/python -m bench.ui_tail $(BENCH_UI_ARGS)

# Events/s into a Valkey/Redis store (README "Scale out") from one and two nodes (~1 min).
bench-valkey: install redis-server $(BENCH_SENDER)
	$(BIN)/python -m bench.valkey_ingest $(BENCH_VALKEY_ARGS)

# SOPS files (README "Secrets and rotation"): ENV=dev means secrets/dev.enc.yaml.
# push: decrypt with the real sops (into a pipe, never to disk) and put the values into
# Secrets Manager (AWS credentials and region from the usual AWS configuration).
secrets-push: secrets-env install
	$(BIN)/python -m logd.server.secrets.sops push secrets/$(ENV).enc.yaml

secrets-edit: secrets-env install
	$(BIN)/sops edit secrets/$(ENV).enc.yaml

secrets-env:  # checked before `install` runs
	@[[ "$(ENV)" =~ ^[a-z0-9-]+$$ ]] || { echo "usage: make $(MAKECMDGOALS) ENV=dev"; exit 2; }

# Deploy to AWS (docs/deploy.md). The host has no internet path, so `wheel` builds logd and
# every dependency for it: Graviton (aarch64) Amazon Linux 2023, CPython INSTANCE_PYTHON
# (infra/components/host_boot.py must agree; a test checks), exactly the pins of
# infra/wheelhouse.lock, which `make lock` resolves with uv for that target (infra/lock.py),
# whatever Python runs make. Context options go in CDK_ARGS, e.g.
# make deploy CDK_ARGS="-c vpc_id=vpc-0123abcd -c az=us-east-1b".
CDK ?= npx --yes aws-cdk@2
CDK_ARGS ?=
INSTANCE_PYTHON := 3.11
WHEELHOUSE := build/wheelhouse
WHEELHOUSE_LOCK := infra/wheelhouse.lock
INSTANCE_PLATFORMS := $(foreach p,manylinux2014 manylinux_2_28 manylinux_2_34,--platform $(p)_aarch64)
FOR_INSTANCE := --only-binary=:all: $(INSTANCE_PLATFORMS) --python-version $(INSTANCE_PYTHON) --implementation cp
UV_VERSION := 0.13.9
UV := $(BIN)/uv

# The AWS CLI and the CDK read AWS_REGION; boto3 (secrets-push) reads only AWS_DEFAULT_REGION,
# so the targets that call AWS pass AWS_REGION on under that name too (it wins, as in the SDKs).
ifneq ($(AWS_REGION),)
secrets-push synth diff deploy: export AWS_DEFAULT_REGION := $(AWS_REGION)
endif

$(UV): | install
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

# The wheelhouse lock's tests run uv (tests/test_wheelhouse_lock.py).
unit: $(UV)

# Resolve the wheelhouse again for the host (PyPI), keeping every pin that still fits.
lock: $(UV)
	$(BIN)/python -m infra.lock --uv $(UV) lock

# A wheel built here on x86-64 cannot carry an arm64 C extension: the wheelhouse holds
# logd's sdist, which the host builds at first boot (with setuptools from the wheelhouse),
# and a pure-Python wheel (LOGD_PURE_PYTHON=1) for when that fails.
build/.wheelhouse-built: pyproject.toml setup.py $(WHEELHOUSE_LOCK) infra/wheelhouse.in \
		service/logd/server/ingest/_fastpath.c service/logd/server/store/_search.c \
		$(shell find service/logd -name '*.py') | install $(UV)
	rm -rf $(WHEELHOUSE) build/sdist-check && mkdir -p $(WHEELHOUSE)
	# The lock still holds what pyproject.toml asks for (resolved again for the host).
	$(BIN)/python -m infra.lock --uv $(UV) check --python $(BIN)/python
	LOGD_PURE_PYTHON=1 $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	$(BIN)/python -m build --sdist --outdir $(WHEELHOUSE) .
	# Exactly the locked files for the host, each checked against its hash.
	$(BIN)/python -m pip download --quiet --no-deps --require-hashes --dest $(WHEELHOUSE) \
		$(FOR_INSTANCE) -r $(WHEELHOUSE_LOCK)
	$(BIN)/python -m infra.lock verify $(WHEELHOUSE)
	# The sdist builds offline from the wheelhouse (here for this machine's CPU).
	$(BIN)/python -m pip wheel --quiet --no-deps --no-index --find-links $(WHEELHOUSE) \
		--no-binary logd --wheel-dir build/sdist-check logd
	# The wheelhouse alone installs logd on the instance's platform, with no index.
	$(BIN)/python -m pip install --quiet --dry-run --ignore-installed --no-index \
		--find-links $(WHEELHOUSE) $(FOR_INSTANCE) 'logd[server,aws]'
	touch $@

wheel: build/.wheelhouse-built

synth: wheel
	cd infra && $(CDK) synth --quiet $(CDK_ARGS)

diff: wheel
	cd infra && $(CDK) diff $(CDK_ARGS)

deploy: wheel
	cd infra && $(CDK) deploy $(CDK_ARGS)

# The host's first boot on arm64, proven on this machine (docs/deploy.md, "make deploy-check"):
# the stack's user data runs in a Debian arm64 root under qemu, then the installed logd is
# checked against moto_server. The root is built once (debootstrap, ~10 min) and kept, by a
# hash of infra/deploy_check/build_root.sh, in build/deploy-check and DEPLOY_CHECK_CACHE
# (machine-wide, so fresh clones on this machine reuse it). Needs root; fails, never skips.
DEPLOY_CHECK_CACHE ?= /var/cache/logd-deploy-check

deploy-check-deps:
	@command -v debootstrap >/dev/null && test -x /usr/bin/qemu-aarch64-static && \
		command -v update-binfmts >/dev/null && command -v systemd-analyze >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			debootstrap qemu-user-static binfmt-support systemd; }

deploy-check: wheel deploy-check-deps
	$(BIN)/python -m infra.deploy_check --cache $(DEPLOY_CHECK_CACHE)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
