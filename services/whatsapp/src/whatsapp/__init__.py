"""Esquadrão whatsapp service (not built yet: see its issue)."""
