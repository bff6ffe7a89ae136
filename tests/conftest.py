import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models: one thread avoids oversubscription when the two cores are shared.
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tiny models, restored afterwards: they gain nothing from threads, and on shared
    cores OpenMP's spin-waiting can make two threads ~100x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight ARM (Janus, 32 px), DM (SD, 64 px) and chat LLM, built once per session."""
    from acdc_core.tiny import build_default_models

    return build_default_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def tiny_builtin(tiny_models):
    """Make the loaders' "(built-in)" choice the tiny models for one test module: node plumbing tests want an
    ARM and a DM of different sizes (resizing, mask sizes) and a Janus-family ARM. The shipped toy-world
    built-ins are tested as such in test_nodes.py and test_workflows.py."""
    from nodes import loaders

    patch = pytest.MonkeyPatch()
    patch.setattr(loaders, "builtin_model_paths", lambda: dict(tiny_models))
    yield tiny_models
    patch.undo()


@pytest.fixture(scope="module")
def standalone_host(tmp_path_factory):
    """The node pack's standalone host for one test module: its own input, temp and output folders, model folders
    shared by the session (tiny fallback models are built there once)."""
    from nodes import bridge

    base = tmp_path_factory.mktemp("host")
    for name in ("input", "temp", "output"):
        (base / name).mkdir()
    bridge.configure_standalone(models_dir=tmp_path_factory.getbasetemp() / "acdc-models", input_dir=base / "input",
                                temp_dir=base / "temp", output_dir=base / "output")
    yield base
    bridge.configure_standalone()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (transformers CLIPModel + processor), saved offline."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from acdc_core.tiny.sd import write_tiny_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(folder / "tok", model_max_length=16))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A DINO-shaped ViT (transformers ViTModel, the layout of facebook/dino-vitb16), random, saved offline."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
