"""Alerts, predictive work orders and technician scheduling (pure: no I/O)."""
