"""One module per area of the spec; each registers the checks of its clause families."""
