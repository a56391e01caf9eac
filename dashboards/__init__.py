"""corral's dashboards: see ../shared/DESIGN.md; built by its own issue."""
