"""When to try a model call again, and how long to wait first.

``openai``'s own retries are switched off (``max_retries=0``) so that one place decides: retries
must stop once streamed tokens have reached the caller, respect the whole call's deadline, and end
in a :class:`~loom.cognitive.llm.types.LLMError` that names the provider and what the server said.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loom.cognitive.llm.types import LLMBadResponse, LLMError, LLMTimeout, LLMUnavailable

__all__ = ["RETRY_STATUSES", "Failure", "backoff_delay", "classify", "retry_after"]

RETRY_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: request timeout, lock conflict, rate limit (the statuses ``openai`` itself retries)."""


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": between half and all of ``base * 2**(attempt-1)``, capped.

    The jitter spreads out clients that failed together so they do not return together.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date), or None."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        msg = body.get("message") or body.get("detail") or body.get("error")
        if msg:
            return str(msg)[:500]
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return str(getattr(exc, "message", "") or exc)[:500]


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one attempt, before it becomes the :class:`LLMError` the caller sees."""

    kind: type[LLMError]
    message: str
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    """Seconds the server asked for (Retry-After), if it did."""

    @property
    def worth_retrying(self) -> bool:
        """Only an unreachable or overloaded endpoint is tried again here; everything else goes up at once."""
        return self.kind is LLMUnavailable

    def error(self, provider: str, note: str = "") -> LLMError:
        return self.kind(provider, self.message + note, status=self.status, retryable=self.retryable)


def classify(exc: BaseException, url: str) -> Failure:
    """What an ``openai`` exception stands for.

    ``LLMUnavailable`` (retryable) for connection errors and 408/409/429/5xx, the only ones this
    client retries itself; ``LLMTimeout`` (retryable: another provider may be faster) for an
    attempt that timed out; ``LLMBadResponse`` for other 4xx (not retryable: the request is wrong)
    and for bodies ``openai`` could not read (retryable: another provider may answer properly).
    """
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Failure(LLMTimeout, f"no answer from {url} within the attempt's timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return Failure(LLMUnavailable, f"cannot reach {url} ({why})", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"HTTP {status} from {url}: {_server_message(exc)}"
        if status >= 500 or status in RETRY_STATUSES:
            return Failure(LLMUnavailable, message, status, True, retry_after(exc.response.headers))
        return Failure(LLMBadResponse, message, status)
    return Failure(LLMBadResponse, f"unreadable answer from {url}: {type(exc).__name__}: {exc}", retryable=True)
