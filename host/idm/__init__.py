"""Host end of IDM: connect to a zone's IDM channel (the protocol core is shared from zoneinit.idm)."""
