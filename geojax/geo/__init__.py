"""Pure spherical geometry: lat/lng ↔ xyz, distances, spherical means, sampling, S2 cells."""
