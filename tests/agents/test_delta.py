"""What a delta carries, compared by content hash with what the registry acknowledged."""

from __future__ import annotations

from agents import delta
from registry.model import Conditions, Endpoint, Service


def svc(name: str, *addresses: str, ready: bool = True) -> Service:
    return Service(
        namespace="ns",
        name=name,
        endpoints=tuple(Endpoint(address=a, conditions=Conditions(ready=ready)) for a in addresses),
    )


def test_only_services_whose_content_differs_are_upserted() -> None:
    acked = delta.hashes([svc("a", "10.0.0.1"), svc("b", "10.0.0.2")])
    # The same content in another endpoint order is no change.
    same = svc("a", "10.0.0.1")
    changed = svc("b", "10.0.0.2", ready=False)
    out = delta.diff(acked, [same, changed], keys={"ns/a", "ns/b"})
    assert out.upserted == (changed,) and out.removed == ()
    assert set(out.hashes) == {"ns/b"}


def test_endpoint_order_is_not_a_change() -> None:
    acked = delta.hashes([svc("a", "10.0.0.1", "10.0.0.2")])
    out = delta.diff(acked, [svc("a", "10.0.0.2", "10.0.0.1")], keys={"ns/a"})
    assert out.empty


def test_removed_names_only_keys_asked_for_that_the_registry_holds() -> None:
    acked = delta.hashes([svc("a", "10.0.0.1"), svc("b", "10.0.0.2")])
    out = delta.diff(acked, [], keys={"ns/a", "ns/never-reported"})
    assert out.removed == ("ns/a",) and out.upserted == ()


def test_a_whole_build_removes_what_the_registry_holds_and_the_source_lacks() -> None:
    acked = delta.hashes([svc("a", "10.0.0.1"), svc("b", "10.0.0.2")])
    new = svc("c", "10.0.0.3")
    out = delta.diff(acked, [svc("a", "10.0.0.1"), new], keys=None)
    assert out.upserted == (new,) and out.removed == ("ns/b",)


def test_amend_records_what_was_acknowledged() -> None:
    acked = delta.hashes([svc("a", "10.0.0.1"), svc("b", "10.0.0.2")])
    changed = svc("a", "10.0.0.9")
    out = delta.diff(acked, [changed], keys={"ns/a", "ns/b"})
    delta.amend(acked, out)
    assert acked == delta.hashes([changed])
    assert delta.diff(acked, [changed], keys={"ns/a", "ns/b"}).empty
