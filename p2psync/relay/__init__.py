"""The relay: an untrusted websocket server that stores and forwards sealed entries for any number of
organisations (`server`), and the storage interface behind it (`store`)."""
