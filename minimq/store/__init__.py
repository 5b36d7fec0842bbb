"""Durability: an append-only, checksummed log of durable state (see store.py)."""
from minimq.store.store import DurableStore, Recovered, StoreLocked

__all__ = ["DurableStore", "Recovered", "StoreLocked"]
