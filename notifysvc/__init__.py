"""notifysvc: tells users, at the callback URL they registered, that their jobs ended."""
