"""The zone's containers as PID 1 runs them: the manager over Styrolite (``manager``), each container's OCI
bundle (``bundle``) and its bounded output (``output``)."""
