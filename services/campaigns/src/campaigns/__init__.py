"""Esquadrão campaigns service (not built yet: see its issue)."""
