"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a config key, a task or language name, a file, a data row.

    The message must be one line and name the offending key, value, file or row,
    with the allowed values where there is a closed set.
    """
