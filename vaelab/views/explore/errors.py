"""The error a bad explorer request raises: a user-facing message plus the HTTP status it maps to.

A subclass of :class:`~vaelab.errors.VaelabError`, so Python callers of the backend catch the usual
type, while the HTTP layer turns it into ``{"error": message}`` with ``status`` (4xx).
"""

from __future__ import annotations

from vaelab.errors import VaelabError


class RequestError(VaelabError):
    """A request the explorer refuses: ``status`` is the HTTP status (400 bad input, 413 too large, ...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
