"""The transformer: layers (masks, positions, SDPA attention with a KV cache), the model
families (Seq2Seq, Classifier, MaskedLM) and the chunked training loss. Imports only the top level."""
