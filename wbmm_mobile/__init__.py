"""wbmm-mobile: WBMM math, Keras layers, the command line and reports."""

__version__ = "0.1.0"
