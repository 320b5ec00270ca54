"""Host end of IDM: connect to a zone's IDM channel (the protocol core is shared from idm)."""

from host.idm import client as _client
from host.idm.client import *  # noqa: F403 - the public names are listed once, in client.__all__

__all__ = list(_client.__all__)
