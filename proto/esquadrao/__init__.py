"""Esquadrão event contracts: generated Protobuf modules and the topic catalog."""
