# syntax=docker/dockerfile:1
# globaldns: one image for the registry, the resolver and both agents.
#
#   docker build -t globaldns/globaldns:0.1.0 .        (or: make image)
#   docker run --rm globaldns/globaldns:0.1.0 resolver --help
#
# Two stages: the first builds a virtual environment with globaldns and uvloop (the
# `fast` extra) and compiles their bytecode; the second copies only that environment
# onto the same slim base, so no compiler, pip cache or source tree ships. The image
# runs as an unprivileged numeric user and writes nothing at run time (no bytecode, no
# state), so it runs with readOnlyRootFilesystem: true; the resolver listens on 5353
# (unprivileged) and a Service maps port 53 to it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/globaldns
COPY pyproject.toml README.md ./
COPY registry/ registry/
COPY resolver/ resolver/
COPY agents/ agents/
COPY globaldns/ globaldns/
# A local path, not a package name: the versions come from pyproject.toml's ranges.
# hadolint ignore=DL3013
RUN /opt/globaldns/bin/pip install --no-cache-dir '.[fast]' \
    && /opt/globaldns/bin/python -m compileall -q /opt/globaldns \
    && /opt/globaldns/bin/python -c "import uvloop, registry, resolver, agents.kubernetes"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="globaldns" \
      org.opencontainers.image.description="DNS-based multi-cluster service registry: registry API, resolver, agents"
COPY --from=build /opt/globaldns /opt/globaldns
COPY deploy/examples/topology.yaml /etc/globaldns/topology.yaml
ENV PATH=/opt/globaldns/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GLOBALDNS_TOPOLOGY=/etc/globaldns/topology.yaml \
    GLOBALDNS_HOST=0.0.0.0 \
    GLOBALDNS_DNS_HOST=0.0.0.0 \
    GLOBALDNS_DNS_PORT=5353 \
    GLOBALDNS_HTTP_HOST=0.0.0.0
WORKDIR /tmp
USER 65532:65532
# registry API 8080; resolver DNS 5353 (UDP and TCP) and HTTP 8053; Kubernetes agent 9102
EXPOSE 8080/tcp 5353/udp 5353/tcp 8053/tcp 9102/tcp
ENTRYPOINT ["globaldns"]
CMD ["--help"]
