"""The ComfyUI nodes: thin adapters over ``acdc_core``, one file per stage, declared with ComfyUI's classic
node contract (so they import, and tests call them, without ComfyUI). ComfyUI internals are reached only
through ``bridge``; node files share helpers (``wires``, ``widgets``, ``frames``, ``graph``, ``masks``,
``comfy_corrector``) and never import each other."""
from . import bridge, frames
from . import (correct, detokenize, fix, generate, loaders, loop, memory, retokenize, story, story_prompts, token_inpaint,
               video)

_MODULES = (loaders, story_prompts, loop, generate, token_inpaint, detokenize, memory, correct, fix, retokenize, story,
            video)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _MODULES:
    for _name, (_cls, _display) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_name] = frames.names_frame_in_errors(_cls, _display)
        NODE_DISPLAY_NAME_MAPPINGS[_name] = _display

bridge.register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
