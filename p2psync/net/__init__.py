"""Network adapters: websocket links, zeroconf discovery, the relay client. Thin layers over the
sans-I/O protocol."""
