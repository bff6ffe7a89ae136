"""The memory module (ACDC step 3): an LLM rewrites each story sentence into a self-contained DM prompt.

    from acdc_core.memory import MemoryModule, MemorySettings, load_local_llm
    memory = MemoryModule(load_local_llm("models/LLM/Qwen2.5-1.5B-Instruct"), MemorySettings(), fit=corrector.fit_prompt)
    y_i = memory.prompt_for(i, story_prompts, earlier_memory_prompts)
"""
from .backends import ChatBackend, LocalLLM, Weightless, check_local_llm_folder, load_local_llm, merge_system_into_user
from .endpoint import API_KEY_ENV, EndpointHTTPError, OpenAICompatibleLLM, check_api_key_env, scrub_url
from .clean import clean_answer, clean_prompt, parse_numbered_list, strip_reasoning
from .module import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_WHOLE_STORY_SYSTEM_PROMPT,
    MEMORY_MODES,
    Memory,
    MemoryAnswer,
    MemoryMode,
    MemoryModule,
    MemorySettings,
    load_prompt_text,
    per_frame_messages,
    validate_story,
    whole_story_messages,
)

__all__ = [
    "ChatBackend", "EndpointHTTPError", "LocalLLM", "OpenAICompatibleLLM", "Weightless", "check_local_llm_folder",
    "load_local_llm", "merge_system_into_user", "API_KEY_ENV", "check_api_key_env", "scrub_url",
    "clean_answer", "clean_prompt", "parse_numbered_list", "strip_reasoning",
    "DEFAULT_SYSTEM_PROMPT", "DEFAULT_WHOLE_STORY_SYSTEM_PROMPT", "MEMORY_MODES", "Memory", "MemoryAnswer", "MemoryMode", "MemoryModule",
    "MemorySettings", "load_prompt_text", "per_frame_messages", "validate_story", "whole_story_messages",
]
