"""Data sets shipped with nn_prune_ext (see `wordnet_nouns`)."""
