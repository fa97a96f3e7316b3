"""The wire: entry format (seal, open, verify), frames and the sync state machine. No I/O."""
