# Benchmarks import the installed package like the tests do; nothing to add here except
# a clear failure when the compiled extensions are missing.
import fasttcp.wire._wire as _wire

assert _wire.__file__.endswith(".so"), f"fasttcp is not compiled: {_wire.__file__}"

