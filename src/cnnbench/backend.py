"""Keras backend constants that several stages share (model's loss, train's optimizers)."""

# keras.backend.epsilon(): Adadelta's and Adam's default epsilon, and the loss's clip.
KERAS_EPSILON = 1e-7
