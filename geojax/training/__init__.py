"""geojax.training (see DESIGN.md)."""
