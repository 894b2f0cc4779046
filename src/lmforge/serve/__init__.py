"""Serving stage: an OpenAI-compatible HTTP server over the generation engine.

:mod:`lmforge.serve.backend` (what runs the model) needs only torch; the HTTP layer
(:mod:`lmforge.serve.app`) needs the ``serve`` extra (FastAPI, uvicorn).
"""

from lmforge.serve.backend import Backend, PromptScores, RequestStream, SerialBackend, build_backend

__all__ = ["Backend", "PromptScores", "RequestStream", "SerialBackend", "build_backend"]
