"""Esquadrão contacts service: the people a company talks to, their lists and consent."""
