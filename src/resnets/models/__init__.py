"""Model families; importing this package registers every named architecture.

Each registered name is also a public builder here, as in torchvision and timm:
`resnets.models.resnet56(num_classes=100)` is `resnets.create_model("resnet56", num_classes=100)`,
and `help(resnets.models.resnet56)` cites its paper and parameter count. (`resnets.models.skipnet` is
the builder too; the module of that name is imported as `from resnets.models.skipnet import ...`.)
"""

# Each module registers its models as it is first imported, in source order, and `resnets models`
# lists them in that order: cifar, densenet, imagenet, skipnet.
from resnets.models.cifar import (
    highway20,
    highway32,
    highway44,
    highway56,
    highway110,
    plain20,
    plain32,
    plain44,
    plain56,
    plain110,
    preact_resnet110,
    preact_resnet164,
    preact_resnet1001,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
    resnet1202,
    wrn28_10,
)
from resnets.models.densenet import (
    densenet40_k12,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    densenet_bc100_k12,
    densenet_bc190_k40,
)
from resnets.models.imagenet import (
    plain18,
    plain34,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    wide_resnet50_2,
)
from resnets.models.skipnet import (
    dense_mlp,
    highway_mlp,
    plain_mlp,
    residual_mlp,
    skipnet,
)

__all__ = [
    "dense_mlp",
    "densenet40_k12",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_bc100_k12",
    "densenet_bc190_k40",
    "highway20",
    "highway32",
    "highway44",
    "highway56",
    "highway110",
    "highway_mlp",
    "plain18",
    "plain20",
    "plain32",
    "plain34",
    "plain44",
    "plain56",
    "plain110",
    "plain_mlp",
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "residual_mlp",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet1202",
    "resnext50_32x4d",
    "skipnet",
    "wide_resnet50_2",
    "wrn28_10",
]
