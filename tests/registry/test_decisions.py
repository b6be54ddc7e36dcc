"""Operator decisions merge by revision, cleared ones included."""

from __future__ import annotations

from registry.decisions import Decision, merge


def test_the_higher_revision_wins_both_ways() -> None:
    drained = Decision("drain:eu", 1, '{"reason": "x"}')
    undrained = Decision("drain:eu", 2, None)
    policy = Decision("policy:ns/web", 3, '{"policy": {"kind": "all"}}')
    give, take = merge({"drain:eu": undrained}, {"drain:eu": drained, "policy:ns/web": policy})
    assert give == [undrained]  # Redis missed the undrain: it is written back, not undone
    assert take == [policy]


def test_what_one_side_lacks_entirely_is_given() -> None:
    kept = Decision("drain:eu", 5, "{}")
    assert merge({"drain:eu": kept}, {}) == ([kept], [])
    assert merge({}, {"drain:eu": kept}) == ([], [kept])
    assert merge({"drain:eu": kept}, {"drain:eu": kept}) == ([], [])


def test_decisions_are_given_in_the_order_they_were_made() -> None:
    ours = {f"drain:c{i}": Decision(f"drain:c{i}", 10 - i, None) for i in range(5)}
    give, _ = merge(ours, {})
    assert [d.rev for d in give] == [6, 7, 8, 9, 10]
