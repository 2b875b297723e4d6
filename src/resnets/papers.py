"""Short citations of the papers the architectures come from (shown by `resnets models`)."""

HE2016 = "He et al. 2016, arXiv:1512.03385"  # Deep Residual Learning for Image Recognition
HE2016B = "He et al. 2016b, arXiv:1603.05027"  # Identity Mappings in Deep Residual Networks
SRIVASTAVA2015 = "Srivastava et al. 2015, arXiv:1507.06228"  # Training Very Deep Networks (Highway)
HIGHWAY_CIFAR = "Srivastava et al. 2015 gates, He et al. 2016 body"
HUANG2017 = "Huang et al. 2017, arXiv:1608.06993"  # Densely Connected Convolutional Networks
XIE2017 = "Xie et al. 2017, arXiv:1611.05431"  # Aggregated Residual Transformations (ResNeXt)
ZAGORUYKO2016 = "Zagoruyko & Komodakis 2016, arXiv:1605.07146"  # Wide Residual Networks
SEED = "the seed's a^l = g(Z^l + a^(l-2))"
DENSE_MLP = "Huang et al. 2017 wiring, fully connected"
