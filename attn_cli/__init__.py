"""attn: train and run your own transformer for translation, sentiment and summarization."""

__version__ = "0.1.0"
