"""Sales command handlers: load the aggregate, call one method, save."""
