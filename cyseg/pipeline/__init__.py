"""The slide pipeline, free of Cytomine: a tile source (`source`) -> tissue (`tissue`) -> tiles,
segmented in batches (`tiles`) -> merged across tiles (`merge`) -> polygons (`objects`), driven by
`workflow` with the model `models` picks per slide and the parameters of `config`; `results` writes
the result files. The legacy job (`cyseg.job`) and the App Engine task (`cyseg.task`) call it; it
imports neither, nor the Cytomine client (`tests/test_layout.py`)."""
