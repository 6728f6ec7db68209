"""Recurrent models from public PyPI packages, fetched at test time and exported as written."""
