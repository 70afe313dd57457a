"""Models: encoders with a width knob, and the task-group multi-task network."""

from mtljax.models.encoders import ENCODERS, CNNEncoder, MLPEncoder
from mtljax.models.multitask import (MultiTaskNet, apply, count_params, create,
                                    forward_flops, graphdef, is_convolutional,
                                    matched_mtl_width, matched_stl_width,
                                    param_count)

__all__ = ["ENCODERS", "CNNEncoder", "MLPEncoder", "MultiTaskNet", "apply",
           "count_params", "forward_flops", "matched_mtl_width", "matched_stl_width", "is_convolutional",
           "create", "graphdef", "param_count"]
