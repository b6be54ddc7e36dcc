"""The exceptions globaldns raises, and why each exists.

::

    GlobalDNSError                 anything of ours
    ├── ConfigError                a setting or file is wrong; the message names it
    ├── StoreError                 Redis could not be used (down, timed out, refused)
    └── StaleReport                a report older than the one already stored

Pure decision code does not raise for expected outcomes: it returns a reason.
"""


class GlobalDNSError(Exception):
    pass


class ConfigError(GlobalDNSError):
    pass


class StoreError(GlobalDNSError):
    pass


class StaleReport(GlobalDNSError):
    def __init__(self, stored_seq: int, seq: int) -> None:
        super().__init__(f"report seq {seq} is older than the stored seq {stored_seq}")
        self.stored_seq = stored_seq
        self.seq = seq
