"""geojax.models (see DESIGN.md)."""
