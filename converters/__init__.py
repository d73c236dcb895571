"""Keras -> TFLite conversion with WBMM lowerings, .tflite I/O, rewrite passes and verification."""
