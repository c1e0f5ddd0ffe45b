"""Model access: one OpenAI-compatible client per provider, and a router over several."""

from loom.cognitive.llm.client import LLMClient, LLMStats
from loom.cognitive.llm.generate_tool import LLMGenerateTool
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
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMGenerateTool",
    "LLMResponse",
    "LLMStats",
    "LLMTimeout",
    "LLMUnavailable",
    "Locality",
    "Message",
    "TokenSink",
    "ToolCall",
    "Usage",
]
