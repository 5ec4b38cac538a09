"""The one error of ``jouled report`` and its plots: a problem the user fixes.

A leaf module, so that ``report`` and ``report_plot`` both import it without importing
each other.
"""

from __future__ import annotations


class ReportError(Exception):
    """A problem the user fixes (bad time, no ledger, no matplotlib); ``str()`` says how."""
