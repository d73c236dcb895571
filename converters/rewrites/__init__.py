"""One module per rewrite of a large depthwise conv (``depthwise_*.py``) plus shared pieces (``_*.py``).

The ordered list of passes and the entry point live in ``converters/rewrite.py``.
"""
