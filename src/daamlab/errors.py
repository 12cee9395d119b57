"""One exception type for bad user input: the entry points print its message on one line and exit 2."""


class DaamlabError(Exception):
    """Bad input (config, data, cache) that the user can fix; the message says what and how."""
