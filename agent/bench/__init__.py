"""How fast is this model here?  Backends, measurement protocol, statistics, results."""
