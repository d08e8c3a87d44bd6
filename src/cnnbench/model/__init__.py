"""Models as data: the layer registry, specs, the torch builder, Keras import, weights files,
export and prediction. No training here."""
