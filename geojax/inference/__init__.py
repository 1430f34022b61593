"""geojax.inference (see DESIGN.md)."""
