"""Keeping mail safe on disk: Maildirs, the spool queue, TinyDB state, durable writes."""
