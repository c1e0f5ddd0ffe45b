"""Thinking agents: an LLM client on ``openai``, a model router, the cognitive loop.

Nothing here imports ``openai`` until a model is actually called.
"""
