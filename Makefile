# The two commands a new user needs: `make dev` and `make test`. Both create .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint image bench bench-scale clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "globaldns needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[fast]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[fast,dev]'
	@touch $@ $(VENV)/.installed-run

dev: $(VENV)/.installed-run
	$(BIN)/globaldns dev

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The image (Dockerfile). Needs a container builder with a running daemon and the base
# image (pulled, or already present): PYTHON_IMAGE=... picks another base.
IMAGE ?= globaldns/globaldns:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PYTHON_IMAGE ?= python:3.11-slim-bookworm
image:
	@command -v docker >/dev/null || { echo "make image: no docker on PATH; install a container builder (docker, or podman with its docker alias) to build $(IMAGE)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: docker is installed but cannot reach a daemon (docker info fails); start dockerd or point DOCKER_HOST at one" >&2; exit 1; }
	@docker build --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t $(IMAGE) . || { echo "make image: the build failed; if the base image $(PYTHON_IMAGE) could not be pulled, load it first (docker load) or pass PYTHON_IMAGE=an-image-you-have" >&2; exit 1; }
	@echo "built $(IMAGE)"

bench: $(VENV)/.installed-test
	$(BIN)/python bench/resolver_qps.py

# Registry sizes 30 / 300k / 3M endpoints on the real processes (~20 min; see bench/README.md).
# Options through SCALE_ARGS, e.g. make bench-scale SCALE_ARGS=--skip-3m
bench-scale: $(VENV)/.installed-test
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
