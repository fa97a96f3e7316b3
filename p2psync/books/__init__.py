"""The books: money, account groups, ledgers, vouchers, their rules, CRDT schema and reports.

Plain Python with no I/O; the store and the node drive it.
"""
