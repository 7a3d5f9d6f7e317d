"""What cyseg needs of a Cytomine server, for the legacy job (`cyseg.job`) and `cyseg dataset`:
a hardened connection (`connection`), a project's images (`images`) and their pixels (`source`)."""
