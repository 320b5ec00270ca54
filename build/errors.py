"""The one base of every error the image builders raise on purpose.

A :class:`BuildError` is a ``StyroliteError`` so the host CLI and the fuzz harness, which report the project's
typed errors as one clear line (``styrolite.errors.describe`` walks the cause chain), handle them unchanged.
"""

from __future__ import annotations

from styrolite.errors import StyroliteError


class BuildError(StyroliteError):
    """An image (initrd, kernel image, root image, app image, dom0) or one of its inputs is unusable."""
