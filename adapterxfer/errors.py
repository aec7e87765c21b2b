"""The error types the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a config key, a task or language name, a file, a data row.

    The message must be one line and name the offending key, value, file or row,
    with the allowed values where there is a closed set. The CLI exits with code 2.
    """


class StudyFailed(Exception):
    """A study ran, and some of its phases failed (or could not start): one line saying how many, the first,
    and where its log is. What finished is recorded and the report is written; the CLI exits with code 1."""
