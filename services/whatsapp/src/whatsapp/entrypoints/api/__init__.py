"""The whatsapp REST API: sessions, messages, Cloud API webhooks, and error translation."""
