"""Model families; importing this package registers every named architecture."""

from resnets.models import cifar, densenet, imagenet, skipnet  # noqa: F401  (registration)
