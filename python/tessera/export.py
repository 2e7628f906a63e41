"""Exporting PyTorch models to ONNX files that `tessera train` (and the C
trainer) can train.

Two things an ordinary torch.onnx.export of a model in eval mode does are
wrong for training: it folds BatchNormalization into the convolution before
it (then there are no batch statistics to train with), and it merges
initializers whose values happen to be equal when the export starts (a
BatchNorm bias and running mean, both zeros; DPP's alpha and lambda), which
would tie parameters that PyTorch trains separately. export_for_training
keeps BatchNorm nodes (TrainingMode.PRESERVE on a model in eval mode) and
gives every use of a merged initializer a copy of its own again."""

import torch

from .nn import DOMAIN


def unshare_initializers(model):
    """Undoes the exporter's merging in an onnx.ModelProto, in place: an
    Identity node that copies an initializer becomes an initializer of its
    own under the Identity's output name (the exporter writes
    `1.running_mean = Identity(1.bias)`), and each further use of an
    initializer gets its own copy, NAME__K. Returns the number of copies."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    copies = 0

    def copy_of(name, new_name):
        t = onnx.TensorProto()
        t.CopyFrom(inits[name])
        t.name = new_name
        model.graph.initializer.append(t)
        inits[new_name] = t

    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy_of(node.input[0], node.output[0])
            copies += 1
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    seen = set()
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name not in seen:
                seen.add(name)
                continue
            copies += 1
            copy_of(name, f"{name}__{copies}")
            node.input[k] = f"{name}__{copies}"
    return copies


def export_for_training(model, example, path, input_names=("x",), output_names=("logits",),
                        opset=13):
    """Writes `model` (its current weights) to the ONNX file `path` for
    training with `tessera train`: a symbolic batch dim on the first input
    and output, BatchNormalization kept, initializers unshared, ai.tessera
    ops (DPP) allowed. The model is left in eval mode. Returns `path`."""
    import onnx

    model.eval()
    torch.onnx.export(model, example, str(path), opset_version=opset,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      custom_opsets={DOMAIN: 1}, input_names=list(input_names),
                      output_names=list(output_names),
                      dynamic_axes={input_names[0]: {0: "batch"}, output_names[0]: {0: "batch"}})
    m = onnx.load(str(path))
    if unshare_initializers(m):
        onnx.save(m, str(path))
    return path
