"""Prunable networks on the coordinator: PyTorch training, fine-tuning and channel pruning.

``torchnet`` (a family's plan as a PyTorch module), ``data`` (digits or a user's .npz),
``train`` (training and fine-tuning), ``slicing`` (filter importance, narrowing weights),
``widthlut`` (a device's width table as a predictor), ``methods`` (uniform, l1, NetAdapt)
and ``pipeline`` (``fleetbench prune``).  PyTorch is the optional ``prune`` extra; only
``torchnet``, ``train`` and ``data`` import it, and the agent imports none of this.
"""
