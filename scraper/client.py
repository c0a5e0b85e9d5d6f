"""Fetch one URL for one scrape job: the whole-request deadline, the status check, the body size limit.

The request itself (TLS, credentials, proxies, redirects, error translation) is
:class:`scraper.httpclient.HTTPClient`'s, the one stack every outgoing request uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import requests

from .errors import BodyTooLarge, HTTPStatusError, ScrapeError
from .httpclient import DEFAULT_USER_AGENT, REDIRECT_STATUSES, Deadline, HTTPClient, Reply, first_line, read_body
from .httpconfig import HTTPClientConfig

log = logging.getLogger(__name__)

#: How much of a non-200 body is read to quote its first line.
_ERROR_BODY_PEEK = 1024


@dataclass(frozen=True)
class FetchedBody:
    """A 200 answer, its body read whole (and decoded only if the server set Content-Encoding)."""

    body: bytes = field(repr=False)
    content_type: str


class TargetClient:
    """Fetches profiles for one scrape job; build it once per job and share it between greenlets."""

    def __init__(self, config: HTTPClientConfig, *, pool_size: int = 100, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self._http = HTTPClient(config, pool_size=pool_size, user_agent=user_agent)
        if config.tls_config.insecure_skip_verify:
            log.warning("tls_config.insecure_skip_verify is set: the certificates of this job's targets are not verified")

    def __repr__(self) -> str:
        return f"TargetClient({self._http!r})"

    def close(self) -> None:
        """Close pooled connections, the token endpoint's included."""
        self._http.close()

    def fetch(self, url: str, *, timeout_s: float, body_size_limit: int) -> FetchedBody:
        """GET ``url`` and return its body; anything but a whole 200 answer within ``timeout_s`` raises.

        Raises ScrapeTimeout, ConnectFailed, TLSError, TooManyRedirects, HTTPStatusError or BodyTooLarge
        (naming the URL), and SecretFileError when a ``*_file`` secret cannot be read.
        """
        deadline = Deadline(timeout_s, url)
        reply = self._http.request("GET", url, deadline)
        response = reply.response
        try:
            if response.status_code != 200:
                raise self._status_error(reply, deadline)
            body = self._read_body(response, deadline, body_size_limit)
            response.raw.release_conn()  # read to the end: the connection can serve the next scrape
        finally:
            response.close()
        return FetchedBody(body=body, content_type=response.headers.get("content-type", ""))

    @staticmethod
    def _status_error(reply: Reply, deadline: Deadline) -> HTTPStatusError:
        response, hops = reply.response, reply.hops
        if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
            location = requests.compat.urljoin(hops[-1], response.headers["location"])
            return HTTPStatusError(
                f"HTTP {response.status_code} {response.reason} redirects to {location}, and follow_redirects "
                "is false; scrape that URL instead, or set follow_redirects: true",
                hops[0], status=response.status_code,
            )
        try:
            peek, _ = read_body(response, deadline, _ERROR_BODY_PEEK)
        except ScrapeError:
            peek = b""  # the status alone says what went wrong
        line = first_line(peek, reply.secrets)
        where = f" from {hops[-1]} (redirected)" if len(hops) > 1 else ""
        message = f"HTTP {response.status_code} {response.reason}{where}" + (f": {line}" if line else "")
        return HTTPStatusError(message, hops[0], status=response.status_code)

    @staticmethod
    def _read_body(response: requests.Response, deadline: Deadline, limit: int) -> bytes:
        length = _content_length(response)
        decoded = response.headers.get("content-encoding", "").strip().lower() in response.raw.CONTENT_DECODERS
        if length is not None and length > limit and not decoded:
            raise BodyTooLarge(f"Content-Length is {length} bytes, over body_size_limit of {limit} bytes; "
                               "raise body_size_limit if this profile is expected to be that large", deadline.url)
        body, more = read_body(response, deadline, limit)
        if more:
            raise BodyTooLarge(f"body is over body_size_limit of {limit} bytes (stopped reading there); "
                               "raise body_size_limit if this profile is expected to be that large", deadline.url)
        return body


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers.get("content-length", ""))
    except ValueError:
        return None
