"""Website integration: site keys, forms, public endpoints, activity."""
