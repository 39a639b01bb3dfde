"""Figures (fed tables and results, never recomputing) and self-contained HTML pages."""
