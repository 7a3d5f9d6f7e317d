"""cyseg: find cells and nuclei in whole-slide images and write them back to Cytomine."""

__version__ = "0.1.0"
