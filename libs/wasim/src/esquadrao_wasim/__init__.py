"""The Esquadrão WhatsApp simulator."""
