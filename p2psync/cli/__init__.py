"""The command line: thin wrappers that parse arguments, call the node and render results."""
