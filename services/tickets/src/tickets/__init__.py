"""Esquadrão tickets service (not built yet: see its issue)."""
