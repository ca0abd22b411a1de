"""Esquadrão platform library: plumbing shared by every service (no business rules)."""
