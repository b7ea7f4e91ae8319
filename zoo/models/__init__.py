"""Built-in architectures; importing this package registers them."""

from zoo.models import cnn, inr, mlp, resnet, transformer  # noqa: F401
