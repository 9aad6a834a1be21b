"""Knowledge base: articles with revisions, publish and archive, categories, PostgreSQL
full-text search, suggestions for a ticket, article-ticket links and "this helped" feedback."""
