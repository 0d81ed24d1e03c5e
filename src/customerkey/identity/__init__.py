"""Identity: who is calling and what it may do (the authorization decision point)."""
