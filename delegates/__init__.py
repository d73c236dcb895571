"""The C++ WBMM delegate (``libwbmm_delegate.so``) and its Python loader."""
