"""The REST API, one module per group of Cytomine resources; `API_ROUTERS` lists them."""
