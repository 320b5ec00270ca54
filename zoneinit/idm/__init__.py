"""IDM: inter-domain messaging between a zone's PID 1 and the host (docs/idm.md is the wire spec)."""
