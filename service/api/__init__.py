"""HTTP routes, one module per resource under `service.api.routes`."""
