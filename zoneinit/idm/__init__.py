"""PID 1's IDM service: the zone's answers to the host over the protocol of the ``idm`` package.

``handlers`` registers the requests (docs/idm.md section 7), ``execs`` pumps exec'd processes and followed
logs through streams within credit, ``errors`` turns the zone's and the runtime's errors into wire codes.
"""
