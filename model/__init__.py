"""starcenter.model: centring networks (VGG6 V1/V2) and the tf.data bridge from Zarr cubes.

Not implemented yet: this package is the subject of the model issue (#6). Nothing here is
imported by the earlier stages.
"""
