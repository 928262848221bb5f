# vfio-user for Node.js. The README gives two commands: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export npm_config_update_notifier := false
export npm_config_fund := false
export npm_config_audit := false

SOCKET ?= $(CURDIR)/run/vfio-user.sock
DEVICE ?= edu

.PHONY: help deps native build lint typecheck test run bench fuzz sysdeps qemu guest clean clean-cache

help:
	@echo "make run    - install what is missing, build, start vfio-user-server on ./run/vfio-user.sock"
	@echo "make test   - install what is missing (npm, addon, QEMU, guest kernels), build, lint, run every test"
	@echo "make bench  - benchmarks, each against a baseline measured in the same run"
	@echo "make fuzz   - the coverage-guided fuzzers for longer (FUZZ_ARGS='--minutes 5 --execs 20000 [target]')"
	@echo "make clean-cache - remove the project's cache (private QEMU root, guest kernels): VFIO_USER_CACHE"

# npm packages (and the native addon, built by its install script, offline against the local Node headers).
# `npm ci` runs again whenever package-lock.json is newer than the installed tree.
node_modules/.package-lock.json: package-lock.json package.json protocol/package.json server/package.json \
		server/native/package.json client/package.json
	npm ci
	@touch $@

deps: node_modules/.package-lock.json

# Rebuild the addon (plain and ASan) when its C sources changed since npm ci.
native: deps
	node server/native/scripts/build.mjs --asan

build: deps native
	npx tsc -b

typecheck: build

lint: deps
	npx biome check .

# Host packages from the host's own release; QEMU >= 10.1 with vfio-user-pci: the host's when it qualifies, else
# trixie-backports' in a private root in the cache (docs/setup.md). Guest kernels in the same cache.
VFIO_USER_CACHE ?= /var/cache/vfio-user-node
qemu:
	bash test/setup/install-qemu.sh

guest: qemu
	bash test/setup/prepare-guest.sh

sysdeps: qemu guest

test: sysdeps build lint
	node test/run-all.mjs

run: build qemu
	@mkdir -p run
	bash test/setup/run-server.sh "$(SOCKET)" "$(DEVICE)"

bench: build
	node test/bench/run.mjs

# make test runs a bounded, seeded slice of the same targets (the `fuzz` suite). The C target needs clang and its
# libFuzzer runtime, host packages of the set-up (qemu).
fuzz: build qemu
	node test/dist/fuzz/run.js $(FUZZ_ARGS)

clean:
	rm -rf node_modules */dist */*/dist server/native/build run *.tsbuildinfo

clean-cache:
	rm -rf "$(VFIO_USER_CACHE)"
