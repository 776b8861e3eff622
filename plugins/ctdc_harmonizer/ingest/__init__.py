"""Delivered files to de-identified staged rows: the only stage that sees identifiers."""
