"""mergesvc: builds each job's bundle once every repository has an outcome."""
