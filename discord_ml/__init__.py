"""discord_ml: distributed training on Ray, from a few parameters to a hardened cluster."""

__version__ = "0.1.0"
