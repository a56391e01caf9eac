"""corral: the one command and the agent that wire runtime, monitor, enforce and dashboards."""

__version__ = "0.1.0"
