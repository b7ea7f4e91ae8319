"""Built-in architectures; importing this package registers them."""

from weightspace.arch.models import cnn, inr, mlp, resnet, tf_compat, transformer  # noqa: F401
