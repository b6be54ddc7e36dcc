"""The vocabulary of bad records: which row of the key schema a key is, and how often a
bad record is said (pure; time comes in)."""

from __future__ import annotations

from registry import keys
from registry.badrecords import BadRecord, Tally, shown


def test_every_key_belongs_to_its_row_of_the_schema() -> None:
    for pattern in keys.PATTERNS:
        assert keys.pattern(pattern) == pattern
    assert keys.pattern(keys.cluster("us-east-prod")) == keys.cluster("<c>")
    assert keys.pattern(keys.services("us-east-prod")) == keys.services("<c>")
    assert keys.pattern(keys.digests("us-east-prod")) == keys.digests("<c>")
    # Garbled cluster names still land in a bounded set of values.
    assert keys.pattern("gdns:cluster:a:b:c") == keys.cluster("<c>")
    assert keys.pattern("gdns:decisions:rev") == keys.DECISIONS_REV
    assert keys.pattern("unrelated") == "other"


def test_a_bad_record_is_said_once_a_while_and_counted_every_time() -> None:
    tally = Tally(every_s=60)
    lease = BadRecord(keys.cluster("us-east-prod"), "last_seen_ms", "not an integer: 'x'")
    other = BadRecord(keys.cluster("eu-west-prod"), "last_seen_ms", "not an integer: 'x'")
    said = [tally.note(lease, now) for now in (0, 1, 2, 59)]
    assert said == [True, False, False, False]
    assert tally.note(other, 3)  # another record is said on its own
    assert tally.note(lease, 60)  # still bad a minute later: said again
    assert tally.counts == {keys.cluster("<c>"): 6}


def test_the_tally_remembers_a_bounded_number_of_records() -> None:
    tally = Tally(every_s=60, remember=3)
    records = [BadRecord(keys.CLUSTERS, f"name-{i}", "not a cluster name") for i in range(10)]
    assert all(tally.note(r, 0) for r in records)
    assert len(tally._said) <= 3
    assert tally.counts[keys.CLUSTERS] == 10


def test_a_bad_value_is_quoted_short() -> None:
    assert shown("x") == "'x'"
    assert len(shown("y" * 1000)) == 40
    assert BadRecord(keys.GENERATION, "", "not a string").as_dict() == {
        "key": "gdns:gen",
        "kind": "gdns:gen",
        "field": "",
        "why": "not a string",
    }
