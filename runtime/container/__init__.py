"""The container runtime: namespaces, the root filesystem and /dev, the process shim."""
