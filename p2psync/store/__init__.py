"""SQLite storage through SQLModel: the entry log, snapshots, materialized tables and sync state."""
