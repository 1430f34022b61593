"""geojax.partitions (see DESIGN.md)."""
