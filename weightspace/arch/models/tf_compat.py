"""``cnn_small_tf``: the Small CNN Zoo network with Keras' padding semantics.

The published Small CNN Zoo (Unterthiner et al. 2020) was trained with
``tf.keras.layers.Conv2D(16, 3, strides=2)`` and *no* ``padding`` argument,
i.e. Keras' default ``padding="valid"`` (see ``train_network.py`` in
google-research/dnn_predict_accuracy). On 28x28 inputs the feature maps are
13x13 -> 6x6 -> 2x2; on 32x32 they are 15 -> 7 -> 3.

The registry's ``cnn_small`` uses ``padding=1`` (symmetric), a different
function for the same 4970 weights. ``cnn_small_tf`` has the *same parameter
names and shapes* as ``cnn_small`` (so state dicts move freely between them)
and reproduces the TF function exactly:

``padding="valid"``
    plain ``nn.Conv2d(..., padding=0)`` -- what the published zoo used.
``padding="same"``
    TF's SAME rule: output ``ceil(n / 2)``, total padding
    ``max((out - 1) * 2 + 3 - n, 0)`` split as ``top = total // 2``,
    ``bottom = total - top`` (the extra row/column goes to the bottom/right).
    For even ``n`` that is (0, 1), which no symmetric torch padding can
    express, so the convolutions get ``padding=0`` and the forward pass applies
    ``F.pad`` with the per-layer pads computed for inputs of ``image_size``
    (the pads are static so ``torch.fx`` can trace the module; inputs of another
    size get the pads of ``image_size``).

Both are checked against a NumPy re-implementation of TF's convolution in
``tests/zoo/test_small_cnn_zoo.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import nn

from weightspace.arch.models._common import extend_signature, image_input_shape
from weightspace.arch.models.cnn import SmallCNN
from weightspace.arch.registry import register_model

__all__ = ["KerasSmallCNN", "tf_same_pads"]


def tf_same_pads(size: int, kernel: int = 3, stride: int = 2) -> tuple[int, int, int]:
    """TF SAME padding of one spatial axis: ``(pad_before, pad_after, out_size)``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


@register_model(
    "cnn_small_tf",
    input_shape=image_input_shape,
    description="Small CNN Zoo network with Keras padding (valid/same); same weights as cnn_small",
    tags=("cnn",),
)
class KerasSmallCNN(SmallCNN):
    """:class:`~weightspace.arch.models.cnn.SmallCNN` with Keras ``valid`` or TF ``same`` padding."""

    def __init__(self, *args: Any, padding: str = "valid", image_size: int = 28, **kwargs: Any) -> None:
        # SmallCNN's arguments (declared there), then the Keras padding ones
        super().__init__(*args, **kwargs)
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.tf_padding = padding
        pads: list[tuple[int, int, int, int]] = []
        size = int(image_size)
        depth = sum(isinstance(m, nn.Conv2d) for m in self.features)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                m.padding = (0, 0)
                if padding == "valid":
                    size = (size - 3) // 2 + 1
                    if size < 1:
                        raise ValueError(
                            f"image_size={image_size} is too small for {depth} valid 3x3/2 convolutions"
                        )
                    pads.append((0, 0, 0, 0))
                else:
                    before, after, size = tf_same_pads(size)
                    pads.append((before, after, before, after))  # F.pad order: left, right, top, bottom
        self.tf_pads = tuple(pads)

    def forward(self, x):
        if self.tf_padding == "valid":
            return super().forward(x)
        i = 0
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                x = F.pad(x, self.tf_pads[i])
                i += 1
            x = m(x)
        return self.classifier(self.pool(x).flatten(1))


# what the registry and ``help()`` read: SmallCNN's arguments, then padding and image_size
KerasSmallCNN.__init__.__signature__ = extend_signature(  # type: ignore[attr-defined]
    SmallCNN.__init__, KerasSmallCNN.__init__
)
