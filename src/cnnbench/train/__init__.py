"""Training: the loop (Keras 2.2 fit semantics), its fast paths, optimizers, callbacks, training
state and checkpoints. No files but checkpoints, no command line."""
