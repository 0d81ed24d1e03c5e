"""Workloads whose content is stored encrypted under the key hierarchy: mail and files."""
