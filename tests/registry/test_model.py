"""The model refuses bad input with a message that names the field and says why."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from registry import topology
from registry.errors import ConfigError
from registry.model import (
    MAX_PORTS,
    MAX_WEIGHTS,
    Admission,
    Endpoint,
    Policy,
    ProbeState,
    Report,
    Service,
    read_service,
)


def test_endpoint_address_is_normalised() -> None:
    assert Endpoint(address="2001:DB8::0:1").address == "2001:db8::1"


BAD_ADDRESSES = [
    ("10.0.0.300", "not an IPv4 or IPv6 address"),
    ("010.0.0.1", "not an IPv4 or IPv6 address"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("255.255.255.255", "limited broadcast"),
    ("240.0.0.1", "reserved"),
    ("4000::1", "reserved IPv6"),
    ("100::1", "discard-only"),
    # a zone index: not an AAAA record at all
    ("2001:db8::66%x", "zone index"),
    ("fe80::1%eth0", "zone index"),
    # IPv4 in IPv6 clothing: refused outright, whatever they hide
    ("::ffff:169.254.169.254", "IPv4-mapped"),
    ("::ffff:10.0.0.1", "IPv4-mapped"),
    ("::169.254.169.254", "IPv4-compatible"),
    ("::10.0.0.1", "IPv4-compatible"),
    # a relay or translator would carry traffic to the address they embed
    ("2002:a9fe:a9fe::1", "embeds 169.254.169.254, a link-local"),
    ("2002:7f00:1::1", "embeds 127.0.0.1, a loopback"),
    ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "embeds 127.0.0.1"),
]


@pytest.mark.parametrize(("address", "why"), BAD_ADDRESSES)
def test_bad_endpoint_addresses(address: str, why: str) -> None:
    for admission in (None, Admission(loopback=True), Admission(loopback=False)):
        with pytest.raises(ValidationError, match=re.escape(why)) as caught:
            Endpoint.model_validate({"address": address}, context=admission)
        assert [e["loc"] for e in caught.value.errors()] == [("address",)]


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "100.64.0.1",
        "192.0.2.1",
        "8.8.8.8",
        "10.0.0.255",
        "2001:db8::1",
        "fd00::1",
        "2606:4700::1111",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_unicast_global_and_private_addresses_are_endpoints(address: str) -> None:
    assert Endpoint.model_validate({"address": address}, context=Admission()).address == address


@pytest.mark.parametrize("address", ["127.0.0.1", "127.10.1.1", "::1"])
def test_loopback_is_the_registrys_call(address: str) -> None:
    """Refused when the registry admits a report (unless it is set to allow them, as dev
    mode does); valid where no admission applies (an agent building its report, a reader
    of what a dev-mode registry stored)."""
    with pytest.raises(ValidationError, match="GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS"):
        Endpoint.model_validate({"address": address}, context=Admission())
    assert Endpoint.model_validate({"address": address}, context=Admission(loopback=True))
    assert Endpoint(address=address).address == address


def test_strict_reports_coerce_nothing() -> None:
    """As the registry parses a report: no string for a number, no float for an int, no
    string or number for a bool; each refusal names its field."""
    service = {
        "namespace": "a",
        "name": "b",
        "ports": [{"name": "http", "port": "80"}],
        "ttl": 5.0,
        "endpoints": [{"address": "10.0.0.1", "conditions": {"ready": "true", "serving": 1}}],
    }
    body = json.dumps({"seq": 1.0, "services": [service]})
    with pytest.raises(ValidationError) as caught:
        Report.model_validate_json(body, strict=True, context=Admission())
    assert {".".join(map(str, e["loc"])) for e in caught.value.errors()} == {
        "seq",
        "services.0.ports.0.port",
        "services.0.ttl",
        "services.0.endpoints.0.conditions.ready",
        "services.0.endpoints.0.conditions.serving",
    }
    fine = {**service, "ports": [{"port": 80}], "ttl": 5, "endpoints": [{"address": "10.0.0.1"}]}
    policy = {"kind": "geo", "min_healthy_fraction": 0, "spill_hold_s": 1}  # ints for floats
    fine["policy"] = policy
    report = Report.model_validate_json(
        json.dumps({"seq": 1, "services": [fine]}), strict=True, context=Admission()
    )
    assert report.services[0].policy is not None


def test_every_list_is_bounded() -> None:
    port = {"name": "", "port": 80}
    with pytest.raises(ValidationError, match="at most 100 items") as caught:
        Service.model_validate({"namespace": "a", "name": "b", "ports": [port] * (MAX_PORTS + 1)})
    assert caught.value.errors()[0]["loc"] == ("ports",)
    with pytest.raises(ValidationError) as caught:
        Endpoint.model_validate({"address": "10.0.0.1", "ports": [port] * (MAX_PORTS + 1)})
    assert caught.value.errors()[0]["loc"] == ("ports",)
    with pytest.raises(ValidationError) as caught:
        Endpoint.model_validate({"address": "1" * 1000})
    assert caught.value.errors()[0]["loc"] == ("address",)
    weights = {f"c{i}": 1 for i in range(MAX_WEIGHTS + 1)}
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate({"kind": "weighted", "weights": weights})
    assert caught.value.errors()[0]["loc"] == ("weights",)
    with pytest.raises(ValidationError) as caught:
        Report.model_validate({"seq": 2**63})
    assert caught.value.errors()[0]["loc"] == ("seq",)
    with pytest.raises(ValidationError) as caught:
        ProbeState.model_validate({"healthy": False, "detail": "x" * 201})
    assert caught.value.errors()[0]["loc"] == ("detail",)


def test_a_reader_leaves_out_an_endpoint_it_refuses_not_the_whole_record() -> None:
    """A record stored before an address kind was refused: its other endpoints stay."""
    stored = {
        "namespace": "a",
        "name": "b",
        "endpoints": [
            {"address": "2001:db8::1"},
            {"address": "2001:db8::66%x"},
            {"address": "::ffff:169.254.169.254"},
            {"address": "127.10.1.1"},  # what a dev-mode registry admitted
        ],
    }
    service = read_service(json.dumps(stored))
    assert service is not None
    assert [e.address for e in service.endpoints] == ["2001:db8::1", "127.10.1.1"]
    assert read_service(json.dumps({**stored, "name": "B"})) is None  # not only endpoints
    assert read_service("{nope") is None


def test_report_errors_name_the_field() -> None:
    body = {
        "seq": 1,
        "services": [
            {"namespace": "production", "name": "API_", "endpoints": [{"address": "x"}]},
        ],
    }
    with pytest.raises(ValidationError) as caught:
        Report.model_validate(body)
    where = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert where == {"services.0.name", "services.0.endpoints.0.address"}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Report.model_validate({"seq": 1, "servces": []})


def test_duplicate_services_and_addresses_are_refused() -> None:
    service = {"namespace": "a", "name": "b", "endpoints": [{"address": "10.0.0.1"}]}
    with pytest.raises(ValidationError, match="services listed twice: a/b"):
        Report.model_validate({"seq": 1, "services": [service, service]})
    twice = {**service, "endpoints": [{"address": "10.0.0.1"}, {"address": "10.0.0.1"}]}
    with pytest.raises(ValidationError, match=r"10\.0\.0\.1 is listed twice"):
        Report.model_validate({"seq": 1, "services": [twice]})


def test_topology_errors_say_where() -> None:
    good = {"regions": {"r1": {"latitude": 1, "longitude": 2}}}
    assert topology.parse(good).regions[0].name == "r1"
    with pytest.raises(ConfigError, match="unknown region 'r2'"):
        topology.parse({**good, "clusters": {"c1": {"region": "r2"}}})
    with pytest.raises(ConfigError, match="latitude"):
        topology.parse({"regions": {"r1": {"latitude": 100, "longitude": 2}}})
    with pytest.raises(ConfigError, match="not a network in CIDR form"):
        topology.parse({**good, "networks": {"10.0.0.1/8": "r1"}})
    with pytest.raises(ConfigError, match="unknown keys"):
        topology.parse({**good, "region": {}})
