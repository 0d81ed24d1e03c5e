"""How domain objects are presented: the property names and shapes the cmdlets and the API
show (vault, mail, files), in one place for every front end."""
