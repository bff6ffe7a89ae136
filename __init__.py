"""ACDC for ComfyUI: the node pack's entry point (ComfyUI imports this folder as a custom node package).

The engine ``acdc_core`` lives beside the nodes; when it is not installed as a package it is loaded from
this folder under its own name, without putting the folder itself on ``sys.path`` (where ``nodes`` would
shadow ComfyUI's own ``nodes`` module).
"""
import importlib.util
import os
import sys

if importlib.util.find_spec("acdc_core") is None:
    _engine = os.path.join(os.path.dirname(os.path.abspath(__file__)), "acdc_core")
    _spec = importlib.util.spec_from_file_location("acdc_core", os.path.join(_engine, "__init__.py"),
                                                   submodule_search_locations=[_engine])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["acdc_core"] = _module
    _spec.loader.exec_module(_module)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
