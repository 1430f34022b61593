"""geojax.data (see DESIGN.md)."""
