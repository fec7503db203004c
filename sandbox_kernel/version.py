"""The project's version, in a module of its own: the sandbox kernel reports it
without importing the package root (which loads the magics, a face the kernel
must not import; docs/architecture.md)."""
__version__ = "0.1.0"
