"""Reference (PyTorch) implementation of HAT / EHAT for gst-ehatsr.

    from ehat_ref import load, upscale
    model = load("model.safetensors", dtype=torch.float64)
    sr = upscale(model, lr)          # lr: [1,3,h,w] in [0,1]

Modules: ``safetensors_io`` (dependency-free safetensors reader/writer), ``model`` (the network,
model-file loading/saving and the test pipeline of EHAT-SPEC.md §1).
"""

from .model import (  # noqa: F401
    FORMAT,
    EhatConfig,
    EhatNet,
    config_to_metadata,
    from_config,
    load,
    parse_metadata,
    reflect_pad,
    save,
    upscale,
)
from .safetensors_io import load_file, save_file  # noqa: F401
