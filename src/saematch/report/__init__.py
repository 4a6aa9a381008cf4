"""Stage 6: heatmaps, curves and a self-contained HTML report."""
