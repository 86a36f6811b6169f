"""Centring networks behind one interface: ``build(arch, raster_size) -> keras.Model``.

VGG6 V1 and V2 are the paper's Table 1 exactly: zero padding of the raster, four convolutions
with ReLU, a max pool after every two, batch normalization after the fourth convolution, a
512-unit dense ReLU layer and a linear 2-unit output (x, y in raster pixels). For a 6x6 raster:
V1 34,418 parameters (34,354 trainable), V2 214,754 (214,626 trainable). More architectures
(the paper's future work names ResNets) register in ARCHITECTURES: ``resnet`` is a small one.

Two options beyond the paper, off by default (the paper's networks are unchanged):
``n_features`` > 0 adds a second input ``features`` (per-star scalars such as the instrumental
magnitude, :data:`starcenter.model.bridge.FEATURES`) joined to the flattened convolution output
before the dense layer; ``uncertainty`` makes the output 4 wide: x, y (raster px) and log sigma_x,
log sigma_y (log px), trained with a Gaussian likelihood (:mod:`starcenter.model.uncertainty`);
``flux`` (with ``uncertainty``) makes it 6 wide: x, y, dlogF (the log of the star's flux over the
classical fit's), then the three log sigmas; ``skip`` (two feature indices) adds those features
(the classical fit's centre in the raster, :data:`starcenter.model.bridge.SKIP`) to the x, y
outputs through a fixed identity, so the network learns a correction to the classical centre.
"""

from __future__ import annotations

from collections.abc import Callable

from starcenter.cubes.errors import BadArgumentError
from starcenter.model import quiet_tensorflow


#: log sigma (log px) the uncertainty outputs start at: sigma = 0.02 px, a mid-flux star's error
LOG_SIGMA0 = -3.9


def _vgg6(raster_size: int, filters: tuple[int, int], kernel: int, padded: int, first_pool: tuple,
          name: str, n_features: int = 0, uncertainty: bool = False, flux: bool = False, skip=()):
    quiet_tensorflow()
    import keras
    from keras import layers

    pad = max(0, padded - raster_size)
    lo, hi = pad // 2, pad - pad // 2
    f1, f2 = filters
    inp = keras.Input((raster_size, raster_size, 1), name="raster")
    x = layers.ZeroPadding2D(((lo, hi), (lo, hi)), name="zero_pad")(inp)
    x = layers.Conv2D(f1, kernel, activation="relu", name="conv1")(x)
    x = layers.Conv2D(f1, kernel, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(pool_size=first_pool[0], strides=first_pool[1], name="max_pool2d")(x)
    x = layers.Conv2D(f2, 3, activation="relu", name="conv3")(x)
    x = layers.Conv2D(f2, 3, activation="relu", name="conv4")(x)
    # momentum 0.9 (Keras default 0.99): the moving statistics used at inference must settle
    # within a few epochs of a few hundred steps; with 0.99 the validation MAE lagged the
    # training MAE by 3-10x for 15 epochs on the demo simulations
    x = layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = layers.MaxPooling2D(pool_size=2, name="max_pool2d_1")(x)
    return _head(inp, x, raster_size, name, 512, n_features, uncertainty, flux, skip)


def _head(inp, x, raster_size: int, name: str, width: int, n_features: int, uncertainty: bool, flux: bool,
          skip=()):
    """Flatten, the per-star features joined, a ``width``-unit dense ReLU layer and the linear
    output (2, 4 or 6 wide), plus the features ``skip`` on x, y: the part every architecture shares."""
    import numpy as np

    import keras
    from keras import layers

    x = layers.Flatten(name="flatten")(x)
    inputs = inp
    if n_features:
        feat = keras.Input((n_features,), name="features")
        x = layers.Concatenate(name="with_features")([x, feat])
        inputs = [inp, feat]
    x = layers.Dense(width, activation="relu", name="fc_1")(x)
    # the output bias starts at the raster's central pixel, where targets lie (no parameter
    # added; without it the first epochs are spent learning a constant of ~3 px)
    c = float(raster_size // 2)
    if flux and not uncertainty:
        raise BadArgumentError("a flux output comes with the uncertainty outputs (--uncertainty)")
    bias = ([c, c, 0.0, LOG_SIGMA0, LOG_SIGMA0, -4.0] if flux else  # dlogF sigma 0.018 (1.8 %)
            [c, c, LOG_SIGMA0, LOG_SIGMA0] if uncertainty else [c, c])
    out = layers.Dense(len(bias), activation="linear", name="fc_out",
                       bias_initializer=keras.initializers.Constant(bias))(x)
    if skip:
        if len(skip) != 2 or not all(0 <= i < n_features for i in skip):
            raise BadArgumentError(f"skip takes two of the {n_features} feature indices, got {tuple(skip)}")
        eye = np.zeros((n_features, len(bias)), np.float32)
        eye[skip[0], 0] = eye[skip[1], 1] = 1.0
        identity = layers.Dense(len(bias), use_bias=False, trainable=False, name="skip")
        out = layers.Add(name="with_skip")([out, identity(feat)])
        identity.set_weights([eye])  # fixed, saved with the weights (a config holds no array)
    return keras.Model(inputs, out, name=name)


def vgg6_v1(raster_size: int = 6, **options):
    """VGG6 V1: 3x3 kernels, 16/32 filters, 6x6 padded to 16x16, 2x2 pools (Table 1)."""
    return _vgg6(raster_size, (16, 32), 3, 16, (2, 2), "vgg6_v1", **options)


def vgg6_v2(raster_size: int = 6, **options):
    """VGG6 V2: 5x5 then 3x3 kernels, 32/64 filters, 6x6 padded to 20x20; the first pool is
    5x5 with stride 1 (12x12 -> 8x8, Table 1)."""
    return _vgg6(raster_size, (32, 64), 5, 20, (5, 1), "vgg6_v2", **options)


def resnet(raster_size: int = 6, n_features: int = 0, uncertainty: bool = False, flux: bool = False,
           skip=(), filters: int = 32, blocks: int = 3):
    """A small ResNet (the paper's future work; He et al. 2016): the raster padded by 1 px, a
    3x3 convolution to ``filters`` channels, ``blocks`` residual blocks (3x3 conv, batch norm,
    ReLU, 3x3 conv, batch norm, identity skip, ReLU) at full resolution -- no pooling: a 6x6
    raster has no pixel to spare -- then the shared head with a 256-unit dense layer. 6x6:
    581,634 parameters (581,250 trainable; 8x8x32 = 2,048 flattened into the 256 units)."""
    quiet_tensorflow()
    import keras
    from keras import layers

    inp = keras.Input((raster_size, raster_size, 1), name="raster")
    x = layers.ZeroPadding2D(1, name="zero_pad")(inp)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="stem")(x)
    for b in range(blocks):
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{b}_conv1")(x)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn1")(y)
        y = layers.Activation("relu", name=f"block{b}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{b}_conv2")(y)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn2")(y)
        x = layers.Activation("relu", name=f"block{b}_out")(layers.Add(name=f"block{b}_add")([x, y]))
    return _head(inp, x, raster_size, "resnet", 256, n_features, uncertainty, flux, skip)


ARCHITECTURES: dict[str, Callable] = {"v1": vgg6_v1, "v2": vgg6_v2, "resnet": resnet}


def build(arch: str, raster_size: int = 6, n_features: int = 0, uncertainty: bool = False,
          flux: bool = False, skip=()):
    """A fresh, uncompiled model of architecture ``arch`` for ``raster_size`` rasters, with
    ``n_features`` per-star inputs, the uncertainty (and flux) outputs if asked, and the features
    ``skip`` (indices) added to x, y."""
    if arch not in ARCHITECTURES:
        raise BadArgumentError(f"unknown architecture {arch!r}; expected one of {tuple(ARCHITECTURES)}")
    return ARCHITECTURES[arch](raster_size, n_features=n_features, uncertainty=uncertainty, flux=flux, skip=skip)
