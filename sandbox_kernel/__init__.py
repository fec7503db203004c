"""sandbox-kernel: notebook cells in resource-limited Linux containers."""
__version__ = "0.1.0"
