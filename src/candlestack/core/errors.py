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


class DatabaseError(CandlestackError):
    """An operator command's database work failed.

    ``target`` is ``host:port/database``, ``user`` the login and ``reason`` PostgreSQL's own
    words; ``exit_code`` is what ``candlestack`` exits with (sysexits.h), so scripts and timers
    can tell the cases apart without parsing the message.
    """

    exit_code = 70  # EX_SOFTWARE: anything not covered by a subclass

    def __init__(self, target: str, user: str, reason: str) -> None:
        super().__init__(reason)
        self.target = target
        self.user = user
        self.reason = reason

    def __str__(self) -> str:
        return f"database error at {self.target} (user {self.user}): {self.reason}"


class DatabaseUnavailableError(DatabaseError):
    """The server did not accept the connection (down, unreachable, or refused the login)."""

    exit_code = 69  # EX_UNAVAILABLE

    def __str__(self) -> str:
        return f"cannot connect to PostgreSQL at {self.target} as {self.user}: {self.reason}"


class DatabasePermissionError(DatabaseError):
    """The login lacks a privilege; ``needs`` names the group role (or owner) the command needs."""

    exit_code = 77  # EX_NOPERM

    def __init__(self, target: str, user: str, reason: str, *, needs: str) -> None:
        super().__init__(target, user, reason)
        self.needs = needs

    def __str__(self) -> str:
        return f"{self.reason} (user {self.user} at {self.target}; this command needs {self.needs})"


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (a driver's message may run to many), for a log field."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ArchiveError(CandlestackError):
    """An archive file of ``candlestack import`` cannot be used; ``file`` names it.

    Nothing of that file is written when this is raised before its load began (a bad checksum,
    a name that says no symbol or kind, an unreadable archive).
    """

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class ChecksumMismatchError(ArchiveError):
    """The file's sha256 differs from its ``.CHECKSUM``: the file is refused."""

    def __init__(self, file: str, expected: str, actual: str) -> None:
        super().__init__(file, f"sha256 {actual} does not match its .CHECKSUM ({expected}); file refused")
        self.expected = expected
        self.actual = actual


class StreamKindError(CandlestackError):
    """The database already holds trades of the other stream type (one database, one type)."""

    def __init__(self, stored: str, importing: str) -> None:
        super().__init__(f"the database holds {stored!r} trades; importing {importing!r} trades into it would mix "
                         "two id spaces (one database holds one stream type): import into another database")
        self.stored = stored
        self.importing = importing
