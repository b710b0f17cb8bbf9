"""Diagnostics a run monitors: weighted kNN accuracy (``knn``) and representation collapse (``collapse``)."""
