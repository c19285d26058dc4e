"""The ensemble 3DCNN of SPEC section 4. ``networks``: the batched base classifiers and the
meta-classifier; training and the model bundle come next."""
