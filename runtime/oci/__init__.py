"""OCI runtime interface: config.json of a bundle (config.py, resources.py)."""
