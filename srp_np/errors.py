"""Errors raised by srp-np.

Every problem with user input (a missing or corrupt model file, a data set
that does not fit the model, a bad option) raises :class:`SrpError` with a
single-line message; the command-line interface prints that line and exits
with status 2 instead of showing a traceback.

Messages speak of the library: a parameter is named in backticks as the function takes it
(`` `tau` ``, `` `data_dir` ``); the command-line interface shows the flag that sets it
(``--tau``, ``--data-dir``; :func:`srp_np.cli.main.cli_terms`).
"""


class SrpError(Exception):
    """A user-facing error whose message is one line that says what is wrong."""
