"""Built-in stage implementations; each runs in its own process from a stage invocation."""
