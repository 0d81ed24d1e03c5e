"""customerkey: customer-held root keys for the data at rest of a multi-tenant service."""

__version__ = "0.1.0"
