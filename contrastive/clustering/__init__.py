"""k-means on features (faiss), as SPCL's per-epoch prototypes use it."""
