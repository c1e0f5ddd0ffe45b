"""Model access: one OpenAI-compatible client per provider, and a router over several."""

from loom.cognitive.llm.types import (
    ChatModel,
    LLMBadResponse,
    LLMConfig,
    LLMError,
    LLMResponse,
    LLMTimeout,
    LLMUnavailable,
    Locality,
    Message,
    TokenSink,
    ToolCall,
    Usage,
)

__all__ = [
    "ChatModel",
    "LLMBadResponse",
    "LLMConfig",
    "LLMError",
    "LLMResponse",
    "LLMTimeout",
    "LLMUnavailable",
    "Locality",
    "Message",
    "TokenSink",
    "ToolCall",
    "Usage",
]
