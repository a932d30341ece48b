"""The one error type of the router: an HTTP status plus a message naming node and module."""

from __future__ import annotations

__all__ = ["RouteError"]


class RouteError(Exception):
    """A request that cannot be answered; ``str()`` is the message the client gets.

    ``retryable`` failures (unreachable module, 5xx, timeout with time left) may be retried and
    may send the call to a declared fallback; ``breaker`` failures count towards ejection.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        node: str | None = None,
        module: str | None = None,
        retryable: bool = False,
        breaker: bool = False,
        fallback: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.node = node
        self.module = module
        self.retryable = retryable
        self.breaker = breaker
        self.fallback = retryable if fallback is None else fallback
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message
