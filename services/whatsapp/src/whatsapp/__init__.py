"""Esquadrão whatsapp service: the only part of the system that talks to WhatsApp.

``domain`` holds the message values, the forward-only status rule and the provider port;
``adapters`` holds the providers behind that port (the WhatsApp Business Cloud API first).
"""
