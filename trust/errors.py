"""What can go wrong when one party decides whether to trust another."""

from __future__ import annotations

from federation.errors import SignpostError


class TrustError(SignpostError):
    """Base class: something is not trustworthy, so the caller must refuse it."""


class SignatureError(TrustError):
    """A signature is missing, malformed, made with the wrong key, or does not verify."""


class ExpiredError(TrustError):
    """A token, envelope or trust list is outside its validity period."""


class RollbackError(TrustError):
    """An older trust list was offered after a newer one had been accepted."""


class RootChainError(TrustError):
    """A governance root cannot be reached: a published root version is missing or out of order."""


class UnknownMemberError(TrustError):
    """The named issuer or key is not in the trust list (or lacks the needed role)."""


class TokenError(TrustError):
    """A practitioner token is malformed or breaks a rule (claims, lifetime, audience)."""


class DownloadError(TrustError):
    """The other party did not answer (connection refused, timeout, HTTP 5xx): nothing was judged.

    Kept apart from the other ``TrustError`` subclasses, which mean it answered and the answer is
    wrong (bad signature, rollback, malformed document, too large).
    """


class NotPublishedError(DownloadError):
    """The publication point answered 404: the document is not published (yet)."""
