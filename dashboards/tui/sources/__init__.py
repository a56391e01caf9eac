"""Where `corral top` gets its frames: the in-process collector, a running agent over HTTP,
or a recording replayed with time travel. Each implements ``sources.base.Source``."""
