"""Persistence: table models, repositories, migrations, blob stores. Repositories never commit."""
