"""The gateway: contextmesh's public gRPC API (BundleService, OpsService)."""
