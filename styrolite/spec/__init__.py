"""OCI runtime-spec config.json: typed model (model.py), parser and validator."""
