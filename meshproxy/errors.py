"""The meshproxy exception hierarchy.

Owns the error types every package raises, so callers catch by meaning (bad config, bad
request) rather than by where it came from. Messages name the field path or peer and what
the user can do.
"""

from __future__ import annotations


class MeshproxyError(Exception):
    """Base of every error meshproxy raises on purpose."""


class ConfigError(MeshproxyError):
    """A configuration was rejected; ``problems`` lists each one as "field.path: message".

    ``source`` names the file (or other text) every problem is in, when there is one; it is said
    once, above the problems, rather than repeated in each.
    """

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        lines = self.problems or ["invalid configuration"]
        super().__init__("\n".join([f"{source}:", *lines] if source else lines))


class IdentityError(MeshproxyError):
    """A SPIFFE ID, certificate, CSR, key or trust bundle was rejected.

    The message names the value (the ID, the certificate's serial and subject, the file) and
    which rule of the SPIFFE ID or X.509-SVID specification it breaks.
    """
