"""The key vault: the customer's side. Vaults, versioned RSA keys, soft delete, backups,
access policies and the wrap/unwrap operations the service depends on."""
