"""The exceptions globaldns raises, and why each exists.

::

    GlobalDNSError                 anything of ours
    ├── ConfigError                a setting or file is wrong; the message names it
    ├── StoreError                 Redis could not be used (down, timed out, refused)
    ├── StaleReport                a report older than the one already stored
    ├── NeedResync                 a delta that does not build on the report stored
    └── LimitExceeded              a report over one of the registry's limits

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


class NeedResync(GlobalDNSError):
    def __init__(self, stored_seq: int | None, base_seq: int) -> None:
        held = "no report" if stored_seq is None else f"seq {stored_seq}"
        super().__init__(
            f"this delta builds on seq {base_seq} but the registry holds {held}: "
            "send the whole state"
        )
        self.stored_seq = stored_seq


class LimitExceeded(GlobalDNSError):
    def __init__(self, limit: str, value: int, maximum: int) -> None:
        super().__init__(f"{limit}: {value} is over the limit of {maximum}")
        self.limit = limit
        self.value = value
        self.maximum = maximum
