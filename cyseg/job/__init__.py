"""The Cytomine job: segment the chosen slides (or their regions of interest) and upload the nuclei."""
from cyseg.job.runner import failure_message, run_job

__all__ = ["failure_message", "run_job"]
