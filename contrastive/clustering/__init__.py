"""k-means on features (faiss), as SPCL's per-epoch prototypes use it, and the per-epoch clustering
state (:mod:`contrastive.clustering.assignments`) the prototype methods keep out of DDP's buffer broadcast."""
