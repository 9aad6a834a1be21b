"""Analytics entrypoints: the query API."""
