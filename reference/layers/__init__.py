"""Reference layers, one file each (SPEC §4), and the registry that the parity suite runs over."""
REGISTRY = {}
