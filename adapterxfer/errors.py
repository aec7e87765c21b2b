"""The error types the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input from the user: a config key, a task or language name, a file, a data row.

    The message must be one line and name the offending key, value, file or row,
    with the allowed values where there is a closed set. The CLI exits with code 2.
    """


class StudyFailed(Exception):
    """A study ran, and some of its phases failed (or could not start): one line saying how many, the first,
    and where its log is. What finished is recorded and the report is written; the CLI exits with code 1."""


def did_you_mean(name, allowed) -> str:
    """"; did you mean 'max_steps'?" when ``name`` is near some of ``allowed``, else ""."""
    near = difflib.get_close_matches(str(name), [str(item) for item in allowed], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, near))}?" if near else ""


def unknown(what: str, name, allowed) -> str:
    """"unknown key 'max_step'; did you mean 'max_steps'? (allowed: ...)": the nearest names before the list."""
    return f"unknown {what} {name!r}{did_you_mean(name, allowed)} (allowed: {', '.join(map(str, allowed))})"
