"""Embedded Cytomine-compatible test server (`cyseg serve`).

It speaks enough of the legacy (software/job era) Cytomine REST API for the unmodified
`cytomine-python-client` 2.4.1 and `sldc-cytomine` 2.5.0 to run a job against slides in a local
folder. State lives in SQLite under the data folder; see docs/SERVER.md.
"""
