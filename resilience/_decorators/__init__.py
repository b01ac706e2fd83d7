"""The decorators, one module each."""
