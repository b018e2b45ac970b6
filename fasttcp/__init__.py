"""fasttcp: a user-space TCP/IP stack for Python with a typed-Cython hot path."""
__version__ = "0.1.0"
