"""Tier 1a's build-time side: the static token table distilled from the encoder, and its fit."""
