"""Divergence: :class:`DivergedError` and the finiteness checks of a DMD step, synced once.

Checking a tensor at once (``bool(torch.isfinite(x).all())``) makes the host wait for the device;
a DMD step would do that dozens of times (losses, gradient norms, every parameter after each of
its ``critic_updates + 1`` updates). :class:`FiniteChecks` queues the checks on the device and
waits once, at :meth:`FiniteChecks.verify`, the end of the generator step:

    checks = FiniteChecks(step)
    checks.add("generator loss", loss)            # no host sync
    checks.add_parameters("student", student)     # after the optimiser step
    checks.verify()                               # one sync; raises DivergedError

A failure raises what checking at once would have raised: the first failing check in queue
order, with the same generator step, quantity and value. The work queued after it changes
nothing in those: it only ran on values that were already not finite, and the run stops.
"""

from __future__ import annotations

import torch
from torch import nn


class DivergedError(RuntimeError):
    """A non-finite loss, gradient norm or parameter: the run stops and the sweep records a failed trial."""

    def __init__(self, step: int, quantity: str, value: float | None = None):
        self.step, self.quantity, self.value = step, quantity, value
        shown = "" if value is None else f" ({value})"
        super().__init__(f"training diverged at generator step {step}: {quantity} is not finite{shown}")

    def __reduce__(self):
        # rebuild from the constructor's arguments, so the error survives pickling (Ray workers -> driver)
        return (DivergedError, (self.step, self.quantity, self.value))


class FiniteChecks:
    """The queued finiteness checks of generator step ``step`` (see the module docstring)."""

    def __init__(self, step: int):
        self.step = step
        self._quantities: list[str] = []
        self._flags: list[torch.Tensor] = []  # [n] bool per add: one flag per quantity
        self._values: list[torch.Tensor | None] = []  # a scalar's value, shown in the error

    def add(self, quantity: str, value: torch.Tensor) -> None:
        """Queue "``value`` (any shape) is finite"; a one-element value is kept to be shown."""
        value = value.detach()
        self._quantities.append(quantity)
        self._flags.append(torch.isfinite(value).all().reshape(1))
        self._values.append(value.clone() if value.numel() == 1 else None)

    def add_parameters(self, what: str, model: nn.Module) -> None:
        """Queue "every parameter of ``model`` is finite", one quantity per parameter, as they are now.

        This is not implied by a finite loss and gradient norm: a huge step (lr 1e30) overflows a
        parameter to inf from finite gradients. Max |p| per parameter is finite exactly when p is
        (NaN propagates through the max), and costs one fused kernel on a GPU.
        """
        named = [(name, p.detach()) for name, p in model.named_parameters()]
        if not named:
            return
        max_abs = torch._foreach_norm([p for _, p in named], float("inf"))
        self._quantities += [f"{what} parameter {name!r}" for name, _ in named]
        self._flags.append(torch.isfinite(torch.stack(max_abs)))
        self._values += [p.clone() if p.numel() == 1 else None for _, p in named]

    def verify(self) -> None:
        """Wait for the device once; raise DivergedError for the first check that failed, if any."""
        if not self._flags:
            return
        flags = torch.cat(self._flags)
        if bool(flags.all()):
            return
        first = flags.tolist().index(False)
        value = self._values[first]
        raise DivergedError(self.step, self._quantities[first], None if value is None else value.item())
