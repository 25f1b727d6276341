"""Knowledge bases without Ray: document loaders, token-aware chunking, the embedder,
the versioned FAISS index store, prompt grounding and retrieval metrics.

Ray Data jobs (`pipelines/`) and the retrieval deployment (`deployments/retrieval.py`)
are thin shims over these modules.
"""
