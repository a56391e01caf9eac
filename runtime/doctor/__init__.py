"""`corral doctor`: what this host's kernel offers corral, and what is missing.

``gather()`` runs the probes (``probes``, ``namespaces``) into one ``Facts`` value;
``diagnose()`` turns facts into ``Check``s (``checks``, with the feature and fix texts of
``features``) and a one-line summary. Nothing here changes the host.
"""

from runtime.doctor.facts import DEFAULT_PARENT, Facts, gather
from runtime.doctor.report import Check, Report, diagnose

__all__ = ["DEFAULT_PARENT", "Check", "Facts", "Report", "diagnose", "gather"]
