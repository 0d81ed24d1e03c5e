"""The cmdlets, one module per product (``connect``, ``keyvault``, ``keyvault_keys``,
``exchange``, ``spo``, ``core``), registered in ``registry``, the one module they all depend
on. ``registry.default_registry()`` imports them all."""
