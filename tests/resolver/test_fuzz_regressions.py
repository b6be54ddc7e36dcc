"""The atheris harness's corpus and crashers, replayed as a regression suite.

``bench/fuzz/fuzz_handler.py`` fuzzes ``Responder.handle``; this replays, through the
same server (``bench/fuzz/target.py``) and the same invariant checks, every seed in the
checked-in corpus and every input that ever broke the harness (``CRASHERS``, as hex), for
UDP and TCP. Every response must also decode with dnspython, an independent codec.

When the fuzzer finds a crasher: add its hex to ``CRASHERS`` with a note on what broke.
While the bug is open the entry carries its description and runs as a strict xfail, so
the suite stays green and the fix is noticed: it turns the xfail into a failure (XPASS),
and the description is then replaced by None.
"""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from bench.fuzz import target
from resolver.respond import Responder

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "fuzz" / "corpus"
SEEDS = sorted(CORPUS.iterdir())


# name: (hex of the input, None, or why it still fails: an open bug, xfail until fixed).
CRASHERS: dict[str, tuple[str, str | None]] = {
    # Found by the harness (run of 2026-11-25 on 3d7e7de, after 470,708 executions).
    "explain-utf8-label-fuzzer": (
        "123400000001000000000001085f6578706c61696e06676c6f62616c076578616d01080101010101"
        "0101010101010101010101013f010101010101010101010101010101010101010101010101010101"
        "0101010101010101012601010116000000000000000101fffefefefefe8f976503636f6d00001000"
        "0100002904d0000000640000",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    # The same, minimized by libFuzzer (-minimize_crash=1).
    "explain-utf8-label-minimized": (
        "123400000001000000000001085f6578706c61696e3f01010101010101010101000101fffefefefe"
        "fe8f976503636f6d000010000100002904d00000006400000000000000000101fffefefefefe8f97"
        "6503636f6d000010000100002904d0000000640000",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    # Found by the 10-minute run with -fork=1 -ignore_crashes=1 (same bug, 3 inputs).
    "explain-utf8-fork-run-1": (
        "123404000001000000000001085f6578706c61696e03022702020202020202020202020202020202"
        "0202020202023202026906676cffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ff6f62616c076578616d706c6503636f6d000010000100002904d0000000650000",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    "explain-utf8-fork-run-2": (
        "123404000001000000000001085f6578706c61696e03617002020202020202020202020202020202"
        "0202020202020202020202020202020202020202020202020202020202020202023402026906676c"
        "919d9e93f89a87a46d706c6502020202020202020202023402026906676c919d9e93f89a87a46d70"
        "6c6503636f6d000010000100002904d0000000000000",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    "explain-utf8-fork-run-3": (
        "123400000001000000000001085f6578706c61696e3a036670690a70726f6475637469b16f6e0667"
        "6c6f62616cc3c3c3c3c3c3c3c3c3c3c3c3afc3c3c3c3c3c3c3c3c3c3076578616d706c6503636f6d"
        "000010000100002904d0000000000000",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    # By hand: _explain.<32 x 0x80> TXT; one label of 64 octets once re-encoded.
    "explain-utf8-label-32-high-bytes": (
        "123400000001000000000000085f6578706c61696e20" + "80" * 32 + "0000100001",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
    # By hand: _explain.<7 labels of 31 x 0xe9>.global.example.com TXT; every label fits
    # 63 octets re-encoded (62), the name does not fit 255.
    "explain-utf8-name-over-255": (
        "123400000001000000000000085f6578706c61696e"
        + ("1f" + "e9" * 31) * 7
        + "06676c6f62616c076578616d706c6503636f6d0000100001",
        None,  # fixed: _explain passes the wire labels on, and is fenced to the zone
    ),
}


@pytest.fixture(scope="module")
def responder() -> Responder:
    return target.build_responder()


def replay(responder: Responder, data: bytes) -> None:
    client = target.client_for(data)
    for tcp in (False, True):
        out = target.check(responder, data, client, tcp=tcp)
        if out is None:
            assert len(data) < 12 or data[2] & 0x80, "silence only for runts and responses"
            continue
        # keyring=False: read a TSIG (our BADKEY answer) without validating it.
        reply = dns.message.from_wire(out, keyring=False)
        assert reply.id == int.from_bytes(data[:2], "big")
        assert reply.flags & dns.flags.QR
        if reply.tsig is not None:
            assert reply.rcode() == dns.rcode.NOTAUTH
            assert reply.tsig[0].error == dns.rcode.BADKEY


def test_the_corpus_is_there() -> None:
    assert len(SEEDS) > 100
    assert all(f.stat().st_size <= 1024 for f in SEEDS)


@pytest.mark.parametrize("seed", SEEDS, ids=[f.name for f in SEEDS])
def test_corpus_seed(responder: Responder, seed: Path) -> None:
    replay(responder, seed.read_bytes())


@pytest.mark.parametrize(
    "hexdata",
    [
        pytest.param(
            h,
            marks=pytest.mark.xfail(raises=target.InternalError, strict=True, reason=bug)
            if bug
            else (),
        )
        for h, bug in CRASHERS.values()
    ],
    ids=list(CRASHERS),
)
def test_crasher(hexdata: str) -> None:
    # A fresh server each: a contained error elsewhere must not be blamed on this input.
    replay(target.build_responder(), bytes.fromhex(hexdata))


def test_no_internal_error_after_the_replay(responder: Responder) -> None:
    for seed in SEEDS:
        replay(responder, seed.read_bytes())
    assert responder.stats["internal_error"] == 0
    assert responder.last_error is None
