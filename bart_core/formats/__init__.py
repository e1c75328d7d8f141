"""Declared mappings between the canonical name table and other frameworks\x27 file layouts."""
