"""Regenerate the fuzz seed corpus in ``bench/fuzz/corpus/``: one query per file.

The seeds are the probe packets of the conformance checklist (shared notes,
dns-conformance.md section 3, rows 1-71; ``rowNN-...`` files) plus ordinary queries for
every kind of name the fuzz server holds (``query-...`` files) and a few extra malformed
ones (``bad-...``). Everything is deterministic: running this again rewrites the same
bytes. Needs dnspython (a dev dependency).

    .venv/bin/python bench/fuzz/make_corpus.py           # rewrite the corpus
    .venv/bin/python bench/fuzz/make_corpus.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rdataclass

CORPUS = Path(__file__).resolve().parent / "corpus"

ZONE = "global.example.com"
API = f"api.production.{ZONE}"
ID = 0x1234
QNAME_API = b"\x03api\x0aproduction\x06global\x07example\x03com\x00"
IN_A = b"\x00\x01\x00\x01"
OPT_RR = bytes.fromhex("00002904d0000000000000")  # root, OPT, udp 1232, no options
NOW_S = 1_000_000


def header(flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ID, flags, qd, an, ns, ar)


def query(
    name: str = API,
    rdtype: int | str = "A",
    *,
    rdclass: int = dns.rdataclass.IN,
    flags: int = 0,
    edns: int | bool = 0,
    payload: int = 1232,
    ednsflags: int = 0,
    options: list[dns.edns.Option] | None = None,
) -> bytes:
    q = dns.message.make_query(
        name,
        rdtype,
        rdclass=rdclass,
        use_edns=edns,
        payload=payload,
        ednsflags=ednsflags,
        options=options,
    )
    q.id = ID
    q.flags = flags
    return q.to_wire()


def opt_with(*options: tuple[int, bytes], ttl: int = 0, udp: int = 1232) -> bytes:
    rdata = b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)
    return b"\x00" + struct.pack("!HHIH", 41, udp, ttl, len(rdata)) + rdata


def api_with_opt(*options: tuple[int, bytes], ttl: int = 0) -> bytes:
    return header(ar=1) + QNAME_API + IN_A + opt_with(*options, ttl=ttl)


def name_wire(name: str) -> bytes:
    labels = [p.encode() for p in name.strip(".").split(".") if p]
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\0"


def tsig_rr(owner: str = "unknown.key.", algorithm: str = "hmac-sha256.") -> bytes:
    rdata = (
        name_wire(algorithm)
        + struct.pack("!HIH", 0, NOW_S, 300)  # 48-bit time signed, fudge
        + struct.pack("!H", 32)
        + bytes(range(32))  # MAC
        + struct.pack("!HHH", ID, 0, 0)  # original ID, error, other length
    )
    return name_wire(owner) + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata


def ecs(raw: bytes) -> list[dns.edns.Option]:
    return [dns.edns.GenericOption(dns.edns.ECS, raw)]


def packets() -> dict[str, bytes]:
    p: dict[str, bytes] = {}

    # -- rows 1-9: the basics
    p["row01-baseline-a-edns"] = query()
    p["row02-rd"] = query(flags=dns.flags.RD)
    p["row03-mixed-case"] = query("ApI.pRoDuCtIoN.GlObAl.ExAmPlE.cOm")
    p["row04-nxdomain"] = query(f"nope.production.{ZONE}")
    p["row04-nxdomain-top"] = query(f"nope.{ZONE}")
    p["row05-below-nxdomain"] = query(f"a.b.nope.{ZONE}")
    p["row06-nodata-mx"] = query(rdtype="MX")
    p["row07-empty-non-terminal"] = query(f"production.{ZONE}")
    p["row08-out-of-zone-org"] = query("www.example.org")
    p["row08-out-of-zone-parent"] = query("example.com")
    p["row08-out-of-zone-root-ns"] = query(".", "NS")
    p["row09-out-of-zone-rd"] = query("www.example.org", flags=dns.flags.RD)

    # -- rows 10-18: types and classes
    p["row10-any-udp"] = query(rdtype="ANY")
    p["row11-qtype-666"] = query(rdtype=666)
    p["row11-qtype-1000"] = query(rdtype=1000)
    p["row12-qtype-0"] = query(rdtype=0)
    for qtype, label in ((41, "opt"), (249, "tkey"), (250, "tsig"), (253, "mailb"), (254, "maila")):
        p[f"row13-meta-qtype-{label}"] = header() + QNAME_API + struct.pack("!HH", qtype, 1)
    p["row14-axfr"] = query(ZONE, "AXFR")
    p["row14-ixfr"] = query(ZONE, "IXFR")
    p["row16-chaos-version-bind"] = query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    p["row16-chaos-id-server"] = query("id.server", "TXT", rdclass=dns.rdataclass.CH)
    p["row17-class-hs"] = query(rdclass=dns.rdataclass.HS)
    p["row17-class-none"] = query(rdclass=dns.rdataclass.NONE)
    p["row17-class-42"] = query(rdclass=42)
    p["row18-class-any"] = query(rdclass=dns.rdataclass.ANY)

    # -- rows 19-25: header bits and opcodes
    p["row19-aa-ad-cd-z"] = query(flags=dns.flags.AA | dns.flags.AD | dns.flags.CD | 0x0040)
    p["row20-tc-in-query"] = query(flags=dns.flags.TC)
    p["row21-qr-set"] = query(flags=dns.flags.QR)
    for opcode in (1, 2, 3, 4, 5, 6, 15):
        wire = bytearray(query(edns=False, flags=dns.flags.RD | dns.flags.CD))
        wire[2] |= opcode << 3
        p[f"row22-opcode-{opcode}"] = bytes(wire)
    p["row25-opcode15-every-flag"] = bytes.fromhex("12347ff00000000000000000")

    # -- rows 26-39: malformed packets
    p["row26-qdcount-0"] = bytes.fromhex("123400000000000000000000")
    p["row27-qdcount-0-opt"] = bytes.fromhex("12340000000000000000000100002904d0000000000000")
    p["row28-qdcount-2"] = header(qd=2) + QNAME_API + IN_A + QNAME_API + IN_A
    p["row29-header-only-qd1"] = bytes.fromhex("123400000001000000000000")
    p["row30-runt"] = bytes.fromhex("1234000000")
    p["row30-empty"] = b""
    p["row31-truncated-qtype"] = header() + QNAME_API + b"\x00"
    p["row32-trailing-garbage"] = header() + QNAME_API + IN_A + b"\xde\xad\xbe\xef"
    p["row33-arcount-1-missing"] = header(ar=1) + QNAME_API + IN_A
    p["row34-pointer-to-itself"] = bytes.fromhex("123400000001000000000000c00c00010001")
    p["row35-pointer-past-end"] = bytes.fromhex("123400000001000000000000c0ff00010001")
    p["row36-pointer-into-header"] = bytes.fromhex("123400000001000000000000c00200010001")
    p["row37-label-type-0x40"] = bytes.fromhex("12340000000100000000000041610000010001")
    p["row38-name-over-255"] = header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + IN_A
    p["row39-binary-label"] = header() + b"\x03a\x00b" + QNAME_API[4:] + IN_A

    # -- rows 40-55: EDNS
    p["row40-edns-version-1"] = query(edns=1)
    p["row41-unknown-option-100"] = query(options=[dns.edns.GenericOption(100, b"xyz")])
    p["row42-unknown-edns-flag"] = query(ednsflags=0x0080)
    p["row43-do"] = query(ednsflags=dns.flags.DO)
    for payload in (0, 100, 511):
        p[f"row44-udp-{payload}-ns"] = query(ZONE, "NS", payload=payload)
    p["row45-udp-65535-big-aaaa"] = query(f"ns3.{ZONE}", "AAAA", payload=65535)
    p["row46-no-edns-big-a"] = query(f"ns2.{ZONE}", "A", edns=False)
    p["row47-big-ns"] = query(ZONE, "NS", payload=65535)
    p["row48-two-opt"] = header(ar=2) + QNAME_API + IN_A + OPT_RR + OPT_RR
    p["row49-opt-in-answer"] = header(an=1) + QNAME_API + IN_A + OPT_RR
    p["row50-opt-owner-not-root"] = header(ar=1) + QNAME_API + IN_A + b"\x01x" + OPT_RR
    p["row51-opt-rdlen-overrun"] = (
        header(ar=1) + QNAME_API + IN_A + bytes.fromhex("00002904d0000000000010")
    )
    p["row51-option-overrun"] = (
        header(ar=1) + QNAME_API + IN_A + bytes.fromhex("00002904d00000000000040064000a")
    )
    p["row52-ext-rcode-in-query"] = (
        header(ar=1) + QNAME_API + IN_A + bytes.fromhex("00002904d0050000000000")
    )
    p["row53-nsid"] = query(options=[dns.edns.NSIDOption(b"")])
    client_cookie = bytes(range(1, 9))
    server_cookie = b"\x01\x00\x00\x00" + struct.pack("!I", NOW_S) + bytes(range(8))
    p["row54-cookie-8"] = api_with_opt((10, client_cookie))
    p["row54-cookie-24"] = api_with_opt((10, client_cookie + server_cookie))
    p["row54-cookie-16"] = api_with_opt((10, client_cookie + bytes(8)))
    p["row54-cookie-40"] = api_with_opt((10, client_cookie + bytes(32)))
    p["row55-cookie-5"] = api_with_opt((10, b"\x01" * 5))
    p["row55-cookie-41"] = api_with_opt((10, b"\x01" * 41))
    p["row27-qdcount-0-cookie"] = header(qd=0, ar=1) + opt_with((10, client_cookie))

    # -- rows 56-65: client subnet, keepalive
    p["row56-ecs-v4-24"] = query(options=[dns.edns.ECSOption("127.0.2.0", 24)])
    p["row56-ecs-v4-25-nested"] = query(options=[dns.edns.ECSOption("127.0.2.128", 25)])
    p["row57-ecs-v4-0"] = query(options=[dns.edns.ECSOption("0.0.0.0", 0)])
    p["row58-ecs-v6-56"] = query(options=[dns.edns.ECSOption("2001:db8:aa::", 56)])
    p["row58-ecs-v6-48-aaaa"] = query(
        rdtype="AAAA", options=[dns.edns.ECSOption("2001:db8:bb::", 48)]
    )
    p["row59-ecs-v4-33"] = query(options=ecs(bytes.fromhex("00012100c0000201")))
    p["row60-ecs-scope-set"] = query(options=ecs(bytes.fromhex("00011808c00002")))
    p["row61-ecs-bits-past-prefix"] = query(options=ecs(bytes.fromhex("00011400c00002")))
    p["row62-ecs-extra-octets"] = query(options=ecs(bytes.fromhex("00010800c00002")))
    p["row63-ecs-family-3"] = query(options=ecs(bytes.fromhex("00031800c00002")))
    p["row63-ecs-truncated"] = query(options=ecs(bytes.fromhex("0001")))
    p["row63-ecs-v6-129"] = query(options=ecs(bytes.fromhex("0002810020010db8")))
    p["row63-ecs-twice"] = api_with_opt(
        (8, bytes.fromhex("00011800c00002")), (8, bytes.fromhex("00011800c00002"))
    )
    p["row64-ecs-soa"] = query(ZONE, "SOA", options=[dns.edns.ECSOption("127.0.2.0", 24)])
    p["row64-ecs-ns"] = query(ZONE, "NS", options=[dns.edns.ECSOption("127.0.2.0", 24)])
    p["row65-keepalive"] = query(options=[dns.edns.GenericOption(11, b"")])
    p["row65-keepalive-with-value"] = query(options=[dns.edns.GenericOption(11, b"\x00\x32")])

    # -- rows 69-71: TSIG and abuse
    p["row69-tsig-unknown-key"] = header(ar=1) + QNAME_API + IN_A + tsig_rr()
    p["row69-tsig-root-key-with-opt"] = header(ar=2) + QNAME_API + IN_A + OPT_RR + tsig_rr(".")
    p["row69-tsig-not-last"] = header(ar=2) + QNAME_API + IN_A + tsig_rr() + OPT_RR
    p["row69-tsig-compressed-owner"] = (
        header(ar=1) + QNAME_API + IN_A + b"\xc0\x0c" + tsig_rr()[len(name_wire("unknown.key.")) :]
    )
    rr = b"\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x01\x00"
    p["row70-60-additional-rrs"] = header(ar=60) + QNAME_API + IN_A + rr * 60
    p["row71-caa-bad-utf8"] = bytes.fromhex(
        "12340000000100000000000100000100010000010100010000000000050003fffefd"
    )

    # -- compression loops and pointers outside the question
    opt_at = 12 + len(QNAME_API) + len(IN_A)
    loop = struct.pack("!H", 0xC000 | opt_at)
    p["bad-opt-owner-pointer-loop"] = header(ar=1) + QNAME_API + IN_A + loop + OPT_RR[1:]
    p["bad-opt-owner-pointer-to-qname"] = header(ar=1) + QNAME_API + IN_A + b"\xc0\x0c" + OPT_RR[1:]
    p["bad-pointer-two-cycle"] = header() + b"\xc0\x0e\xc0\x0c" + IN_A
    p["bad-sig0-in-additional"] = (
        header(ar=1) + QNAME_API + IN_A + b"\x00" + struct.pack("!HHIH", 24, 1, 0, 4) + b"abcd"
    )
    p["bad-label-type-0x80"] = header() + b"\x80a" + QNAME_API + IN_A
    p["bad-label-past-end"] = header() + b"\x3fabc"

    # -- ordinary queries for every kind of name the fuzz server holds
    for rdtype in ("A", "AAAA", "ANY", "SOA", "NS", "MX", "TXT"):
        low = rdtype.lower()
        p[f"query-api-{low}-edns"] = query(API, rdtype)
        p[f"query-api-{low}-no-edns"] = query(API, rdtype, edns=False)
        p[f"query-apex-{low}-edns"] = query(ZONE, rdtype)
        p[f"query-apex-{low}-no-edns"] = query(ZONE, rdtype, edns=False)
        p[f"query-nope-{low}-edns"] = query(f"nope.production.{ZONE}", rdtype)
    p["query-web-a-many-endpoints"] = query(f"web.production.{ZONE}", "A")
    p["query-web-aaaa-none"] = query(f"web.production.{ZONE}", "AAAA")
    p["query-big-aaaa"] = query(f"big.staging.{ZONE}", "AAAA")
    p["query-big-a-no-edns"] = query(f"big.staging.{ZONE}", "A", edns=False)
    p["query-v6only-a"] = query(f"db.payments.{ZONE}", "A")
    p["query-v6only-aaaa"] = query(f"db.payments.{ZONE}", "AAAA")
    p["query-ns1-any"] = query(f"ns1.{ZONE}", "ANY")
    p["query-ns2-a-tcp-size"] = query(f"ns2.{ZONE}", "A", payload=4096)
    p["query-ns3-aaaa-no-edns"] = query(f"ns3.{ZONE}", "AAAA", edns=False)
    for service in ("every.production", "down.production", "web.production"):
        short = service.split(".")[0]
        p[f"query-{short}-a"] = query(f"{service}.{ZONE}", "A")
        p[f"query-{short}-aaaa"] = query(f"{service}.{ZONE}", "AAAA")
    p["query-v6only-a-from-eu"] = query(
        f"db.payments.{ZONE}", "A", options=[dns.edns.ECSOption("127.0.2.0", 24)]
    )
    p["query-big-a-ecs-v6"] = query(
        f"big.staging.{ZONE}", "A", options=[dns.edns.ECSOption("2001:db8:aa::", 48)]
    )
    p["query-pinned-cluster-a"] = query(f"eu-west-prod.api.production.{ZONE}", "A")
    p["query-pinned-cluster-aaaa"] = query(f"ap-south-prod.db.payments.{ZONE}", "AAAA")
    p["query-pinned-unknown-cluster"] = query(f"nowhere.api.production.{ZONE}", "A")
    p["query-explain-api"] = query(f"_explain.{API}", "TXT")
    p["query-explain-big-ecs"] = query(
        f"_explain.big.staging.{ZONE}", "TXT", options=[dns.edns.ECSOption("127.0.3.0", 24)]
    )
    p["query-explain-pinned"] = query(f"_explain.us-east-prod.web.production.{ZONE}", "TXT")
    p["query-explain-nxdomain"] = query(f"_explain.nope.{ZONE}", "TXT")
    p["query-explain-out-of-zone"] = query("_explain.www.example.org", "TXT")
    p["query-explain-a"] = query(f"_explain.{API}", "A")
    p["query-api-every-option"] = query(
        options=[
            dns.edns.NSIDOption(b""),
            dns.edns.ECSOption("2001:db8:aa:8000::", 64),
            dns.edns.CookieOption(client_cookie, b""),
            dns.edns.GenericOption(11, b""),
            dns.edns.GenericOption(12, bytes(16)),  # padding
        ],
        ednsflags=dns.flags.DO,
        flags=dns.flags.RD | dns.flags.CD,
    )
    return p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the corpus is current")
    args = parser.parse_args()
    wanted = packets()
    present = {f.name: f.read_bytes() for f in CORPUS.glob("*")} if CORPUS.exists() else {}
    stale = sorted(set(present) - set(wanted))
    changed = sorted(name for name, data in wanted.items() if present.get(name) != data)
    if args.check:
        for name in stale:
            print(f"not made by this script: {name}")
        for name in changed:
            print(f"missing or different: {name}")
        return 1 if stale or changed else 0
    CORPUS.mkdir(exist_ok=True)
    for name in stale:
        (CORPUS / name).unlink()
    for name in changed:
        (CORPUS / name).write_bytes(wanted[name])
    print(f"{len(wanted)} seeds in {CORPUS} ({len(changed)} written, {len(stale)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
