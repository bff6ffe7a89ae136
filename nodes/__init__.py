"""The ComfyUI nodes: thin adapters over ``acdc_core``, one file per stage, declared with ComfyUI's classic
node contract (so they import, and tests call them, without ComfyUI). ComfyUI internals are reached only
through ``bridge``."""
from . import bridge
from . import correct, detokenize, fix, generate, loaders, loop, memory, retokenize, story

_MODULES = (loaders, loop, generate, detokenize, memory, correct, fix, retokenize, story)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _MODULES:
    for _name, (_cls, _display) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_name] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_name] = _display

bridge.register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
