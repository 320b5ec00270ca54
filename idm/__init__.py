"""IDM, inter-domain messaging: the one wire protocol between a zone's PID 1 and the host (docs/idm.md).

Both ends import this package: framing and the message schema, typed errors, transports (sockets, file
descriptors, Xen vchan), the zone's non-blocking server and the blocking client. It imports nothing of the
runtime (styrolite), PID 1 (zoneinit) or the host.
"""
