"""``acdc bench``: the paper's variants x an item set, one folder per item, sharded across processes and hosts,
resumable, then merged into the paper's tables with the metrics (``acdc_core.metrics``).

    acdc bench run --out OUT --toy heldout --count 100           # the toy world's stories, built-in models
    torchrun --nproc-per-node 2 -m acdc_core.cli bench run ...   # the same, two processes (each its own shard)
    acdc bench merge --out OUT                                   # the tables, from the folders alone
"""
from .items import BenchItem, read_items, write_items
from .merge import merge
from .runner import run_bench
from .shard import Shard, parse_shard, shard_from_env
from .variants import VARIANTS, Variant, run_variant, variant_named

__all__ = ["BenchItem", "read_items", "write_items", "merge", "run_bench", "Shard", "parse_shard",
           "shard_from_env", "VARIANTS", "Variant", "run_variant", "variant_named"]
