"""The Esquadrão WhatsApp simulator: the Cloud API and WhatsApp-Web-like sessions, and the
independent witness of every message our whatsapp service sent (docs/whatsapp-simulator.md).

Run it with ``esquadrao-wasim serve`` (:mod:`esquadrao_wasim.cli`), as a child process
(:mod:`esquadrao_wasim.process`) or in the running event loop
(:func:`esquadrao_wasim.server.running_simulator`); drive it with
:mod:`esquadrao_wasim.client`.
"""
