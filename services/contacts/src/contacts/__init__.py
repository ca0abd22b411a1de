"""Esquadrão contacts service (not built yet: see its issue)."""
