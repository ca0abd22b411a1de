"""Pure model of the whatsapp service: values and rules, no I/O."""
