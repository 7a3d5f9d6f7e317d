"""cyseg as a Cytomine App Engine task: `task/descriptor.yml` says what it takes and gives, `io`
reads and writes parameters as the App Engine's task I/O spec encodes them, `run` is the task
(`python -m cyseg.task`), and `client` drives a run through an App Engine's HTTP API.

The App Engine is BETA upstream: its formats live in `descriptor` and `io` only, so a change there
is a small edit.
"""
