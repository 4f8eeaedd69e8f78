"""The project's exception hierarchy. Each error carries the offending thing as an attribute."""

from __future__ import annotations


class CandlestackError(Exception):
    """Base class of every error candlestack raises on purpose."""


class SettingsError(CandlestackError):
    """A setting is missing or malformed; ``variable`` names the environment variable."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class ContractError(CandlestackError):
    """A message does not follow the wire contract; ``field`` names the first bad field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class GapFillError(CandlestackError):
    """Trade ids ``from_id``..``to_id`` of ``symbol`` could not be fetched from REST.

    ``retryable`` tells a failure that may heal (rate limit, ban, 5xx, network) from one that
    will not; ``retry_after_s`` is the least wait the server asked for, if it did.
    """

    def __init__(self, symbol: str, from_id: int, to_id: int, reason: str, *, retryable: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{symbol} {from_id}..{to_id}: {reason}")
        self.symbol = symbol
        self.from_id = from_id
        self.to_id = to_id
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s
