"""Weight I/O: lmforge checkpoints, transformers directories, GGUF files, and the name maps between.

- :mod:`~lmforge.models.io.checkpoint`: :func:`load` (any source) and :func:`save` (lmforge format).
- :mod:`~lmforge.models.io.hf`: transformers directories (read, and :func:`save_hf`).
- :mod:`~lmforge.models.io.gguf`: llama.cpp's GGUF files.
- :mod:`~lmforge.models.io.convert`: the weight-name rules families write their maps in.
- :mod:`~lmforge.models.io.build`: what the loaders share (checking and building a model).

This package imports nothing itself: family modules import :mod:`~lmforge.models.io.convert`
while the loaders import the families, so an eager import here would be circular.
"""
