"""Metrics, confusion matrices, overlays and evaluation reports."""
