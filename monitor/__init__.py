"""corral's monitor: see ../shared/DESIGN.md; built by its own issue."""
