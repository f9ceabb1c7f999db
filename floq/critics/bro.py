"""The BRO critic (Nauman et al. 2024, "Bigger, Regularized, Optimistic"): the monolithic
scalar Q ensemble (floq.critics.monolithic.MonolithicCritic, squared TD error) over BRO's
residual network, floq.nets.bro.BroNet (`@BroNet()` in gin/critics/bro.gin). Only the
architecture is BRO's: its other parts (quantile critic, optimistic exploration, resets,
weight decay, replay ratio) belong to its algorithm, not to a critic, and are not here.

This module registers BroNet with gin (floq.config.register imports every module of
floq.critics; floq/nets/ modules other than specs.py are imported only by their users).
"""

from __future__ import annotations

from floq.nets.bro import BroMLP, BroNet

__all__ = ["BroMLP", "BroNet"]
