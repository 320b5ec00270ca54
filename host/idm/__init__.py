"""Host end of IDM: connect to a zone's IDM channel (the protocol core is shared from zoneinit.idm)."""

from zoneinit.idm.client import ClientStream, Event, ExecSession, IdmClient

__all__ = ["ClientStream", "Event", "ExecSession", "IdmClient"]
