"""The one exception type a user is meant to read."""


class DefdistillError(Exception):
    """A problem with the user's input or files: the message names it and the fix.

    The command line prints the message on one line and exits non-zero, without a traceback.
    """
