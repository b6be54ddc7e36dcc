"""Per-service settings from the ``globaldns.io/*`` annotations of an exported Service.

Export itself is the *label* ``globaldns.io/export: "true"`` (the EndpointSlice controller
copies Service labels onto slices, so both watches are filtered on the server). The
settings are annotations, which the controller does not copy::

    globaldns.io/policy               geo | failover | weighted | all | residency
    globaldns.io/failover-order       us-east-prod,eu-west      (clusters or regions)
    globaldns.io/weights              us-east-prod=95,eu-west-prod=5
    globaldns.io/min-healthy          2
    globaldns.io/min-healthy-fraction 0.5
    globaldns.io/spill-hold           10s
    globaldns.io/when-all-unhealthy   last_known_good | all | none
    globaldns.io/ttl                  5                          (seconds, 1-300)
    globaldns.io/address-mode         pods | loadbalancer
    globaldns.io/min-ready-endpoints  1     (loadbalancer mode: healthy while this many are)
    globaldns.io/probe                tcp | http
    globaldns.io/probe-port           8080 | http                (number, or a port name
                                                                  resolved per slice)
    globaldns.io/probe-path           /healthz                   (http only)
    globaldns.io/probe-interval       2s      globaldns.io/probe-timeout   500ms
    globaldns.io/probe-rise           2       globaldns.io/probe-fall      3

A Service's annotations are read as one unit: when any of them is invalid (or unknown: a
typo must not silently drop a setting), *none* is applied, the Service is published
with the defaults, and every problem is returned for the agent to log and count. A
half-read set (say a probe with its port but not its path) is never published.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from registry.model import Policy
from registry.topology import describe

PREFIX = "globaldns.io/"
EXPORT_LABEL = PREFIX + "export"

_POLICY_KEYS = {
    "policy": "kind",
    "failover-order": "order",
    "weights": "weights",
    "min-healthy": "min_healthy",
    "min-healthy-fraction": "min_healthy_fraction",
    "spill-hold": "spill_hold_s",
    "when-all-unhealthy": "when_all_unhealthy",
}
_PROBE_KEYS = {
    "probe",
    "probe-port",
    "probe-path",
    "probe-interval",
    "probe-timeout",
    "probe-rise",
    "probe-fall",
}
KNOWN = {*_POLICY_KEYS, *_PROBE_KEYS, "ttl", "address-mode", "min-ready-endpoints"}

AddressMode = Literal["pods", "loadbalancer"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    kind: Literal["tcp", "http"] = "tcp"
    port: int | str | None = None
    """A number, a port name (resolved per slice), or None: the endpoint's first port."""
    path: str = "/"
    interval_s: float = 2.0
    timeout_s: float = 1.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    policy: Policy | None = None
    ttl: int | None = None
    address_mode: AddressMode | None = None
    """None: ``loadbalancer`` for Services of type LoadBalancer, else ``pods``."""
    min_ready: int = 1
    probe: ProbeSettings | None = None


DEFAULTS = ServiceSettings()


@dataclass(frozen=True, slots=True)
class Parsed:
    settings: ServiceSettings
    problems: tuple[str, ...] = ()


class _Problems:
    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, key: str, value: str, why: str) -> None:
        self.found.append(f"{PREFIX}{key}={value!r}: {why}")


def _int(problems: _Problems, key: str, value: str, low: int, high: int) -> int | None:
    if not re.fullmatch(r"\d+", value.strip()):
        problems.add(key, value, "not a whole number")
        return None
    number = int(value)
    if not low <= number <= high:
        problems.add(key, value, f"must be from {low} to {high}")
        return None
    return number


def _duration(problems: _Problems, key: str, value: str, high: float) -> float | None:
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        problems.add(key, value, "not a duration (e.g. 2s, 500ms, 1.5)")
        return None
    seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if not 0 < seconds <= high:
        problems.add(key, value, f"must be above 0 and at most {high:g}s")
        return None
    return seconds


def _policy(problems: _Problems, given: Mapping[str, str]) -> Policy | None:
    fields: dict[str, Any] = {}
    for key, value in given.items():
        name = _POLICY_KEYS[key]
        if name == "order":
            fields[name] = tuple(part.strip() for part in value.split(",") if part.strip())
        elif name == "weights":
            weights: dict[str, Any] = {}
            for part in (p.strip() for p in value.split(",") if p.strip()):
                cluster, sep, weight = part.partition("=")
                if not sep:
                    problems.add(key, value, f"{part!r} is not cluster=weight")
                    return None
                weights[cluster.strip()] = weight.strip()
            fields[name] = weights
        elif name == "spill_hold_s":
            seconds = _duration(problems, key, value, 3600)
            if seconds is None:
                return None
            fields[name] = seconds
        else:
            fields[name] = value.strip()
    try:
        return Policy.model_validate(fields)
    except ValidationError as exc:
        problems.found.append(f"{PREFIX}policy settings: {describe(exc)}")
        return None


def _probe(problems: _Problems, given: Mapping[str, str]) -> ProbeSettings | None:
    kind = given.get("probe", "").strip()
    if kind not in ("tcp", "http"):
        if "probe" in given:
            problems.add("probe", given["probe"], "must be tcp or http")
        else:
            problems.found.append(f"{PREFIX}probe-* set without {PREFIX}probe (tcp or http)")
        return None
    values: dict[str, Any] = {"kind": kind}
    if "probe-port" in given:
        raw = given["probe-port"].strip()
        if raw.isdigit():
            values["port"] = _int(problems, "probe-port", raw, 1, 65535)
        elif _PORT_NAME.fullmatch(raw):
            values["port"] = raw
        else:
            problems.add("probe-port", raw, "neither a port number nor a port name")
    if "probe-path" in given:
        path = given["probe-path"].strip()
        if kind != "http":
            problems.add("probe-path", path, "only an http probe has a path")
        elif not path.startswith("/") or any(c.isspace() for c in path):
            problems.add("probe-path", path, "must start with / and contain no spaces")
        values["path"] = path
    for key, name, high in (
        ("probe-interval", "interval_s", 300),
        ("probe-timeout", "timeout_s", 60),
    ):
        if key in given:
            values[name] = _duration(problems, key, given[key], high)
    for key, name in (("probe-rise", "rise"), ("probe-fall", "fall")):
        if key in given:
            values[name] = _int(problems, key, given[key], 1, 100)
    if any(v is None for k, v in values.items() if k != "port") or problems.found:
        return None
    settings = ProbeSettings(**values)
    if settings.timeout_s > settings.interval_s:
        problems.found.append(
            f"{PREFIX}probe-timeout ({settings.timeout_s:g}s) is longer than "
            f"{PREFIX}probe-interval ({settings.interval_s:g}s)"
        )
        return None
    return settings


def parse(annotations: Mapping[str, str]) -> Parsed:
    """The Service's settings, or the defaults and every problem found."""
    ours = {k[len(PREFIX) :]: v for k, v in annotations.items() if k.startswith(PREFIX)}
    problems = _Problems()
    for key in sorted(set(ours) - KNOWN):
        hint = " (export is a label, not an annotation)" if key == "export" else ""
        problems.add(key, ours[key], f"unknown annotation{hint}")
    policy_given = {k: v for k, v in ours.items() if k in _POLICY_KEYS}
    policy = _policy(problems, policy_given) if policy_given else None
    probe_given = {k: v for k, v in ours.items() if k in _PROBE_KEYS}
    probe = _probe(problems, probe_given) if probe_given else None
    ttl = _int(problems, "ttl", ours["ttl"], 1, 300) if "ttl" in ours else None
    mode: AddressMode | None = None
    if "address-mode" in ours:
        value = ours["address-mode"].strip()
        if value == "pods":
            mode = "pods"
        elif value == "loadbalancer":
            mode = "loadbalancer"
        else:
            problems.add("address-mode", ours["address-mode"], "must be pods or loadbalancer")
    min_ready = 1
    if "min-ready-endpoints" in ours:
        min_ready = (
            _int(problems, "min-ready-endpoints", ours["min-ready-endpoints"], 0, 100000) or 0
        )
    if problems.found:
        return Parsed(DEFAULTS, tuple(problems.found))
    return Parsed(
        ServiceSettings(policy=policy, ttl=ttl, address_mode=mode, min_ready=min_ready, probe=probe)
    )
