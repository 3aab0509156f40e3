"""`jaxport.translate`: the Flax NNX twin of a torch model, written from a torch.fx
trace (issue 30; docs/translate.md).

    source = translate(torch_model, example_inputs)   # the Python source of a module
    # which defines make_model() -> the NNX twin with fresh weights

`python -m jaxport.translate pkg.mod:Factory --data data.npz --out port.py` writes the
file and runs check_port on the pair in float32 and float64 (jaxport/translate/cli.py).

This subpackage is the one part of jaxport that imports torch (it reads torch models);
the code it writes imports jax, flax and jaxport only.
"""
from __future__ import annotations

from jaxport.translate.trace import Untranslatable

__all__ = ["Untranslatable", "translate"]


def translate(torch_model, example_inputs, source_name: str | None = None) -> str:
    """The source of an NNX module file twin to `torch_model`, traced on
    `example_inputs` (a tuple of tensors, or one tensor). Raises Untranslatable naming
    the module, function or control flow it cannot write, its source line, and what to
    write by hand."""
    import torch  # noqa: PLC0415 (only the translator needs torch)

    from jaxport.translate.module_file import FileWriter  # noqa: PLC0415
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    # float inputs in the model's own dtype (an .npz holds float64 for a float32 model)
    dtype = next((p.dtype for p in torch_model.parameters()), torch.float32)
    example_inputs = tuple(torch.as_tensor(a) for a in example_inputs)
    example_inputs = tuple(a.to(dtype) if a.is_floating_point() else a for a in example_inputs)
    name = source_name or f"{type(torch_model).__module__}.{type(torch_model).__name__}"
    return FileWriter(torch_model, tuple(example_inputs)).source(name)
