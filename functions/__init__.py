"""MLRun handlers: thin adapters that read params, call the library, log what it returns."""
