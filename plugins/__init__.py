"""Built-in rule types; each module is a plugin registered by dotted name, like a third-party one."""
