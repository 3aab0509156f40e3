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

from jaxport.translate.trace import BadExample, Untranslatable

__all__ = ["BadExample", "Untranslatable", "translate"]


def translate(torch_model, example_inputs, source_name: str | None = None) -> str:
    """The source of an NNX module file twin to `torch_model`, traced on
    `example_inputs`: one tensor, a tuple of them (forward's positional inputs), or a
    dict {forward's parameter: tensor} (keyword inputs; the twin's __call__ takes the
    same names). Arrays are taken as they are (numpy too). Raises Untranslatable
    naming the module, function or control flow it cannot write, its source line, and
    what to write by hand; BadExample where the torch model itself fails on them."""
    import torch  # noqa: PLC0415 (only the translator needs torch)

    from jaxport.translate.module_file import FileWriter  # noqa: PLC0415
    if not isinstance(example_inputs, (tuple, list, dict)):
        example_inputs = (example_inputs,)
    # float inputs in the model's own dtype (an .npz holds float64 for a float32 model)
    dtype = next((p.dtype for p in torch_model.parameters()), torch.float32)

    def tensor(a):
        a = torch.as_tensor(a)
        return a.to(dtype) if a.is_floating_point() else a
    if isinstance(example_inputs, dict):
        args, kwargs = (), {k: tensor(a) for k, a in example_inputs.items()}
    else:
        args, kwargs = tuple(tensor(a) for a in example_inputs), {}
    name = source_name or f"{type(torch_model).__module__}.{type(torch_model).__name__}"
    return FileWriter(torch_model, args, kwargs).source(name)
