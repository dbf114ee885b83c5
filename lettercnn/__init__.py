"""lettercnn: learning-rate studies of a letter-classifying CNN in JAX."""
