"""The one exception type for mistakes a user can fix.

Library code raises :class:`VaelabError` at the boundary (loaders, configs, run directories) with a
one-line message naming the file or flag and what was expected. The CLI turns it into
``vaelab: error: <message>`` and a non-zero exit, without a traceback. Internal invariants stay
assertions: they are bugs, not user errors.
"""


class VaelabError(Exception):
    """A user-facing error: bad input, a missing file, an out-of-range setting."""
