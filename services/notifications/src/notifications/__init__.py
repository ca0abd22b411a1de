"""Esquadrão notifications service (not built yet: see its issue)."""
