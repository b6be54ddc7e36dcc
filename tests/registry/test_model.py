"""The model refuses bad input with a message that names the field and says why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from registry import topology
from registry.errors import ConfigError
from registry.model import Endpoint, Report


def test_endpoint_address_is_normalised() -> None:
    assert Endpoint(address="2001:DB8::0:1").address == "2001:db8::1"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.0.0.300", "not an IPv4 or IPv6 address"),
        ("0.0.0.0", "not a unicast address"),
        ("224.0.0.1", "not a unicast address"),
        ("fe80::1", "not a unicast address"),
    ],
)
def test_bad_endpoint_addresses(address: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Endpoint(address=address)


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
