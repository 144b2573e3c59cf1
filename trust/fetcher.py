"""The one fetcher for trust documents (trust lists, published roots): bounded in size and time.

Fetching is apart from verifying (python-tuf's ``FetcherInterface.download_bytes``): the fetcher
returns at most ``max_bytes`` bytes or raises, and ``trust.trustlist`` judges them. "Did not
answer" (``DownloadError``: refused, timed out, HTTP 5xx) stays apart from "answered wrong"
(``TrustError``: an HTTP status that is not 200, a body past the cap), so a party can report an
unreachable publication point differently from a forged or damaged one.

One client only, the standard library's blocking ``urllib``: the services call it through
``asyncio.to_thread``, so the event loop never waits on the network here. The deadline covers
the whole download: the body is read as it arrives (``read1``, one receive at a time) and the
clock is checked after every receive, so a source that drips a byte at a time is cut off within
``timeout`` plus one receive's ``timeout`` (never left holding the refresh for ever).
"""

from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
import urllib.request

from trust.errors import DownloadError, NotPublishedError, TrustError

CHUNK = 64 * 1024


class Fetcher:
    """Download a document of at most ``max_bytes`` within ``timeout`` seconds in all."""

    def __init__(self, timeout: float = 10.0, max_bytes: int = 4 * 1024 * 1024) -> None:
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError("Fetcher: timeout and max_bytes must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes

    def fetch_blocking(self, url: str) -> bytes:
        """The body of ``url`` (HTTP 200 only). Raises ``DownloadError`` or ``TrustError``."""
        if not url.startswith(("https://", "http://")):
            raise TrustError(f"{url[:200]}: expected an http(s) URL")
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                if response.status != 200:
                    raise TrustError(f"{url}: expected HTTP 200, got {response.status}")
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise TrustError(f"{url}: answered {declared} bytes, at most {self.max_bytes} accepted")
                body = bytearray()
                while chunk := response.read1(CHUNK):  # what one receive brought, not a full CHUNK
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise TrustError(f"{url}: answered more than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise DownloadError(f"{url}: did not finish within {self.timeout:g} s")
                return bytes(body)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotPublishedError(f"{url}: not published (HTTP 404)") from None
            if exc.code >= 500:
                raise DownloadError(f"{url}: did not answer (HTTP {exc.code})") from None
            raise TrustError(f"{url}: expected HTTP 200, got {exc.code}") from None
        except TrustError:
            raise
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: did not answer ({exc.__class__.__name__})") from None

    async def fetch(self, url: str) -> bytes:
        """``fetch_blocking`` on a worker thread."""
        return await asyncio.to_thread(self.fetch_blocking, url)
