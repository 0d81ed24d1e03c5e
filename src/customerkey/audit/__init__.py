"""The audit log: the keyed chain (``chain``), its writer (``log``), the reader with its
visibility rules (``reader``), signed checkpoints (``checkpoints``), the sinks they go to
(``sinks``) and the publisher that sends them (``publisher``)."""
