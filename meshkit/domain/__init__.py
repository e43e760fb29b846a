"""The domain model several services share: the bundle document, its passages, embeddings,
the model and bundle pointers, and deterministic ids.

It sits above the runtime (`meshkit`) and below the services; the runtime never imports it.
"""
