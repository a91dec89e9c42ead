"""Bundled data sets, so the pipeline can be tried end to end without bringing any images."""
