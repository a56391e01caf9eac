"""Small widgets of `corral top`: one per file (table, status bar; plots, processes and the
audit list for the detail and enforcer screens)."""
