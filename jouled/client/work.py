"""The work a request did, handed from a handler to the span that times it.

*Work* is what jouled splits a workload's energy by: GFLOPs, or token counts that jouled
turns into GFLOPs with the model's configured GFLOPs per token. A handler calls
``set_work(...)``; the enclosing ``reporter.span()`` or middleware reads it on exit.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

# A ContextVar is per-request by construction (each task/thread sees its own value); the
# module holds only the key, never a request's data.
_CURRENT: ContextVar[Work | None] = ContextVar("jouled_client_work", default=None)


@dataclass(slots=True)
class Work:
    """Mutable on purpose: frameworks run handlers in a *copy* of the context (Starlette's
    threadpool for sync endpoints, BaseHTTPMiddleware's task group), so a handler cannot
    rebind the variable for its caller, but it can fill in the object both contexts share."""

    gflops: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None

    @property
    def known(self) -> bool:
        """Whether any work was reported; tokens count: jouled converts them to GFLOPs."""
        return not (
            self.gflops is None and self.input_tokens is None and self.output_tokens is None
        )


def set_work(
    *,
    gflops: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    model: str | None = None,
) -> bool:
    """Record the current request's work (and model, when only the body names it).

    Arguments left ``None`` keep what was set before. Returns ``False``, and does nothing,
    outside a span or a jouled middleware, so that handlers may call it unconditionally.
    """
    work = _CURRENT.get()
    if work is None:
        return False
    if gflops is not None:
        work.gflops = gflops
    if input_tokens is not None:
        work.input_tokens = input_tokens
    if output_tokens is not None:
        work.output_tokens = output_tokens
    if model is not None:
        work.model = model
    return True


def current_work() -> Work | None:
    """The work object of the innermost open span in this context, if any."""
    return _CURRENT.get()


def push_work(work: Work) -> Token[Work | None]:
    return _CURRENT.set(work)


def pop_work(token: Token[Work | None]) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:
        # Entered and exited in different contexts (a span handed between tasks): resetting
        # is impossible there, and clearing is the closest safe thing.
        _CURRENT.set(None)
