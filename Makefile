# swiftchat: one entry point for setting up, building, running and testing.
#   make run    set up, build, and start the whole local stack (.run/dev); prints its URLs
#   make test   set up, build, unit tests, the integration suite against .run/test, then
#               the Debian package built and checked (lintian, systemd-analyze verify, and
#               install/upgrade/remove/purge in a clean Debian 12 chroot)
#   make stop   stop every local stack under .run/
SHELL := /bin/bash
STACK := scripts/stack.sh

.PHONY: setup build run stop status test unit bench fuzz soak clean deb deb-check

setup:
	@$(STACK) setup

build: setup
	swift build -c release
	@if [ -f web/build.sh ]; then bash web/build.sh; fi

run: build
	@STACK_DIR=.run/dev $(STACK) start

stop:
	@for d in .run/*/; do \
	  [ -d "$$d/pids" ] || continue; \
	  STACK_DIR="$$d" $(STACK) stop || exit 1; \
	done

status:
	@found=0; for d in .run/*/; do \
	  [ -f "$$d/ports.env" ] || continue; found=1; \
	  STACK_DIR="$$d" $(STACK) status; \
	done; [ $$found = 1 ] || echo "no stack under .run/"

unit:
	swift test

test: build
	@scripts/test.sh
	@DEB_COMPRESSION=gzip scripts/deb-check.sh --build

# The long schemathesis run (make test runs 25 examples per operation): its own stack,
# 200 examples per operation, fuzzing and the stateful phase repeated for 10 minutes per run.
fuzz: build
	@SCHEMATHESIS_MAX_EXAMPLES=$${SCHEMATHESIS_MAX_EXAMPLES:-200} SCHEMATHESIS_MAX_TIME=$${SCHEMATHESIS_MAX_TIME:-600} \
	  SKIP_UNIT=1 PYTEST_TIMEOUT=3600 PYTEST_ARGS="Tests/integration/test_97_schemathesis.py" scripts/test.sh

bench: build
	@if [ -f bench/run.sh ]; then bash bench/run.sh; else echo "no bench/run.sh yet"; fi

clean: stop
	rm -rf .run

# Debian package: dist/swiftchat_<version>_<arch>.deb (dpkg-buildpackage -us -uc -b).
deb:
	@scripts/deb-build.sh

# lintian, systemd-analyze verify, and the install/upgrade/remove/purge cycle in a clean
# Debian 12 chroot (root; a Debian mirror; ~3 min with .deb-cache/, ~5 without, plus the build).
deb-check: deb
	@scripts/deb-check.sh
