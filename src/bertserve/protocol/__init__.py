"""Wire formats: pure translation between bytes and protocol-neutral messages."""
