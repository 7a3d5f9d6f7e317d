"""The REST API under /api, one module per group of Cytomine resources (assembled in cyseg.server.app)."""
