"""Banks of features kept across steps (SPCL's per-epoch feature bank)."""
