"""Operation handlers, one module per resource; connexion routes each operationId here."""
