"""How fast is this model here?  Backends, measurement protocol, statistics, results."""

#: The registered backends' names, for the CLI's --backend choices without importing the
#: registry (it loads numpy: the idle daemon's memory).  A test keeps it equal to the registry.
BACKEND_NAMES = ("litert", "onnxruntime")
