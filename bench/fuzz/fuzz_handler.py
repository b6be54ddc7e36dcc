"""Coverage-guided fuzzing of ``Responder.handle`` with atheris (see README.md here).

Every input is handed to one long-lived Responder twice, as a UDP datagram and as a TCP
message, from a client address picked by the input's last byte. The harness fails on:

* any exception out of ``handle()`` (it must never raise);
* an *internal error*: ``handle()`` caught an exception of ours and answered SERVFAIL
  (``stats["internal_error"]`` went up) -- contained, but still a bug; the traceback of
  the contained exception is in the failure message;
* a broken invariant: a response that is not bytes, shorter than a header, with another
  ID, QR clear, RA/Z/AD set, over 1232 octets on UDP, or any answer to a runt or to a
  message with QR=1.

Run from the repository root:

    .venv/bin/python bench/fuzz/fuzz_handler.py -max_total_time=60 -max_len=1024 \
        /tmp/fuzz-new bench/fuzz/corpus
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["dnslib", "registry", "resolver", "bench"]):
    from bench.fuzz import target

RESPONDER = target.build_responder()


def test_one_input(data: bytes) -> None:
    client = target.client_for(data)
    target.check(RESPONDER, data, client, tcp=False)
    target.check(RESPONDER, data, client, tcp=True)


def main() -> None:
    # libFuzzer's -fork and -minimize_crash modes re-run argv[0] through the shell: make
    # it the whole command (this interpreter and this file), not just the script's path.
    argv = [f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"]
    atheris.Setup(argv + sys.argv[1:], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
