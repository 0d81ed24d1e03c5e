"""The command line: ``customerkey`` (also ``ck``), thin commands over the services."""
