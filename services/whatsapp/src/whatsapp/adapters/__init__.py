"""Clients of what lies outside the service: WhatsApp providers and their webhooks."""
