"""containerd 1.6's protobuf messages (ttrpc envelope, task service, events, cgroup metrics), generated.

See README.md here. Importing a `*_pb2` module imports the protobuf runtime; this package itself does not.
"""
