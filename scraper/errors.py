"""Every error the scraper raises, named for what happened.

    ScraperError
    ├── ConfigError                 the config file or the environment is invalid
    ├── StartupError                ``pprof-scraper run`` cannot start (data dir in use, port taken, …)
    ├── UnknownJobError             a task names a job this process's config does not have
    ├── SecretFileError             a *_file secret is missing, unreadable or too open
    ├── ScrapeError                 one scrape failed; ``kind`` is the label used in status and metrics
    │   ├── ScrapeTimeout               the whole request took longer than its timeout
    │   ├── ConnectFailed               refused, reset, unresolvable, proxy failure
    │   ├── TLSError                    handshake or certificate verification failed
    │   ├── TooManyRedirects            a redirect loop or too long a chain
    │   ├── HTTPStatusError             the target answered something other than 200
    │   ├── BodyTooLarge                the body (or its decompressed form) exceeds body_size_limit
    │   ├── InvalidProfile              the body is not a valid pprof profile
    │   ├── TooManySamples              the profile holds more samples than the job's sample_limit
    │   └── ScrapeSkipped               not attempted, e.g. a CPU profile of the target is in flight
    └── PushError                   a push to a receiver failed
        ├── PushRejected                the store refused it; retrying will not help
        └── PushUnavailable             the store could not take it now; retry later

Messages name the URL or the config field and say what to do about it.
"""

from __future__ import annotations


class ScraperError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ScraperError):
    """The configuration is invalid; ``problems`` lists one line per problem, each naming its field."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")


class StartupError(ScraperError):
    """``pprof-scraper run`` cannot start; the message says what is in the way and what to do."""


class UnknownJobError(ScraperError):
    """A task named a scrape job that this process's config does not define."""


class SecretFileError(ScraperError):
    """A ``*_file`` secret could not be used."""


class ScrapeError(ScraperError):
    """One scrape of one target failed; the message names the URL."""

    #: short, stable name used as the ``result`` label in metrics and shown in status
    kind: str = "error"

    def __init__(self, message: str, url: str | None = None) -> None:
        self.url = url
        #: the message without the URL
        self.reason = message
        super().__init__(f"{message} ({url})" if url else message)


class ScrapeTimeout(ScrapeError):
    """The target did not send its whole answer within the scrape timeout."""

    kind = "timeout"


class ConnectFailed(ScrapeError):
    """No connection could be made or kept: refused, reset, unresolvable name, proxy failure."""

    kind = "connection"


class TLSError(ScrapeError):
    """The TLS handshake failed or the target's certificate did not verify."""

    kind = "tls"


class TooManyRedirects(ScrapeError):
    """The target redirected in a loop or too many times."""

    kind = "redirects"


class HTTPStatusError(ScrapeError):
    """The target answered with a status other than 200."""

    kind = "http_status"

    def __init__(self, message: str, url: str | None = None, status: int = 0) -> None:
        self.status = status
        super().__init__(message, url)


class BodyTooLarge(ScrapeError):
    """The body, or what it decompresses to, is larger than ``body_size_limit``."""

    kind = "too_large"


class InvalidProfile(ScrapeError):
    """The body is not a valid pprof profile; the message says what it looks like instead."""

    kind = "invalid_pprof"


class TooManySamples(ScrapeError):
    """The profile holds more samples than the job's ``sample_limit``."""

    kind = "sample_limit"


class ScrapeSkipped(ScrapeError):
    """The scrape was not attempted, for a reason that is not the target's fault."""

    kind = "skipped"


class PushError(ScraperError):
    """A push of a profile to a receiver failed."""

    #: short, stable name used as the ``result`` label in metrics
    kind: str = "error"


class PushRejected(PushError):
    """The store refused the profile (a 4xx other than 429, a label limit, a size limit); retrying will not help."""

    kind = "rejected"


class PushUnavailable(PushError):
    """The store could not take the profile now (connection, timeout, 5xx, 429); a retry may succeed."""

    kind = "unavailable"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)
