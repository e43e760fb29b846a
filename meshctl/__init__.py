"""meshctl: the contextmesh command line (up, refresh, job, bundle, search)."""
