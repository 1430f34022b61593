"""Evaluation: accuracy at km thresholds, error statistics, GeoScore, paper-layout tables."""
