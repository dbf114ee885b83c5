"""`python -m lettercnn.study`: the best rate and the edge, at a fraction of a sweep."""
