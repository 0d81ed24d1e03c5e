"""The mail workload (Exchange's side of Customer Key): mailboxes, mail users, items."""
