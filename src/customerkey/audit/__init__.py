"""The audit log: the hash-chained writer (``log``) and the reader with its visibility
rules (``reader``)."""
