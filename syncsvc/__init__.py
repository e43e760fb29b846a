"""syncsvc: discovers users' repositories and syncs the stale ones."""
