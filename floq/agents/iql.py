"""Implicit Q-learning (IQL), parameterised by any critic.

Kostrikov, Nair & Levine (2022), "Offline Reinforcement Learning with Implicit Q-Learning",
as implemented in the FQL repository (github:seohongpark/fql, agents/iql.py), which this
module reproduces:

  V(s)      expectile regression (expectile tau) of a value network V onto the TARGET
            critic's Q(s, a) at dataset actions (aggregated over the ensemble by the critic's
            q_agg; IQL's definition is the min over the two Qs, which gin/algorithms/iql.gin
            sets with Q_AGG = 'min'):  L_V = E[|tau - 1(Q - V < 0)| (Q - V)^2]
  Q(s, a)   regression (critic.fit) onto r + gamma * mask * V(s') with the current V (no
            gradient into V)
  actor     'awr': a Gaussian policy (state-independent std; constant std 1 by default, as
            the reference's const_std=True) maximising E[min(exp(alpha (Q - V)), 100) log pi(a|s)]
            with Q the ONLINE critic (stop-gradient) at dataset actions; 'ddpgbc':
            -Q(s, clip(mu(s))) / |Q|.mean() (stop-gradient) - alpha * log pi(a|s)
  one Adam over actor, V and the critic's online parameters; the critic's target is
  Polyak-averaged (tau) towards the online parameters from before the step.

The value network V(s) belongs to the algorithm (params['value']), not the critic.

Evaluation acts with the mode (the reference evaluates at temperature 0: the clipped mean);
exploration (online phase) samples mean + std * noise, clipped (temperature 1).

Deviations from the reference (deliberate; tests/agents/test_iql.py checks the rest):
  * Critic loss scale: the reference sums the squared errors of its two Qs
    (((q1 - y)^2 + (q2 - y)^2).mean()); critics in floq fit every member with the mean over
    the ensemble (the critic interface fits all critics the same way), so with the monolithic
    critic the critic loss and its gradients are the reference's / num_ensembles (1/2).
    Adam is invariant to that scale up to its epsilon.
  * The ensemble aggregation (V's target and the AWR / DDPG+BC Q) is the critic's q_agg, not
    a hard-coded min: gin/algorithms/iql.gin sets Q_AGG = 'min' (IQL's definition).
  * Keys: as the reference (new_rng, rng = split(rng); rng, actor_rng = split(rng)); the
    critic's keys (V's target draw, the fit's draws) come from critic.keys(rng) of the
    leftover key. The monolithic critic draws nothing, so it matches the reference exactly.
  * Random critics: V's target is `value_of_actions` (FloqCritic: the target field integrated
    from noise_samples draws and averaged; IQN: the mean of num_quantiles target quantile
    samples at random fractions), so V regresses onto a noisy estimate of the target Q.
    The TD target r + gamma V(s') is one scalar per transition, so a distributional critic
    (IQN) regresses all its quantiles onto that one value: it runs, but it learns no return
    distribution inside IQL.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from floq.agents.base import BASE_BATCH_KEYS, gradient_step
from floq.critics.base import actor_value, count_params, td_targets, value_of_actions
from floq.nets.mlp import MLP, default_init
from floq.nets.specs import MLPNet

ACTOR_LOSSES = ("awr", "ddpgbc")


def warn_scalar_target(name: str, critic) -> None:
    """One line at config time: a distributional critic inside IQL/IFQL learns no return
    distribution (its quantiles all regress onto the one scalar target r + gamma * V(s'))."""
    if getattr(critic, "distributional", False):
        import warnings

        warnings.warn(f"{name} with the {critic.name} critic: the TD target r + gamma * V(s') is one scalar per "
                      f"transition, so every quantile regresses onto it (no return distribution is learned)",
                      stacklevel=2)


def expectile_loss(diff, expectile: float):
    """|expectile - 1(diff < 0)| * diff^2, elementwise."""
    weight = jnp.where(diff >= 0, expectile, 1.0 - expectile)
    return weight * diff**2


def actor_q_key(rng):
    """The key of a critic's random actor estimate in the DDPG+BC loss (folded, so that the
    reference's draws are unchanged)."""
    return jax.random.fold_in(rng, 0x7151)


# --- the value network and IQL's value learning (shared with IFQL) -----------------------
def value_apply(value_net, v_params, obs):
    """(B,) V(s) of a scalar-output network spec."""
    return value_net.module(output_dim=1).apply({"params": v_params}, obs)[..., 0]


def value_init(value_net, rng, obs):
    return value_net.module(output_dim=1).init(rng, obs)["params"]


def value_losses(value_net, expectile, critic, trainable, critic_target, batch, rng):
    """IQL's V and Q losses: (v_loss + q_loss, metrics).

    trainable: {'value': V params, 'critic': online critic params, ...} (the gradient's
    argument); critic_target: the critic's target parameters; rng: the leftover key, split by
    critic.keys into V's target draw and the fit's key."""
    obs, act = batch["observations"], batch["actions"]
    k_value, k_fit = critic.keys(rng)
    # V: expectile regression onto the TARGET critic's Q at dataset actions.
    q = jax.lax.stop_gradient(value_of_actions(critic, critic_target, obs, act, k_value))  # (B,)
    v = value_apply(value_net, trainable["value"], obs)
    v_loss = expectile_loss(q - v, expectile).mean()
    # Q: regression onto r + gamma * mask * V(s'), the current V without gradient.
    next_v = jax.lax.stop_gradient(value_apply(value_net, trainable["value"], batch["next_observations"]))
    targets = td_targets(batch, critic.discount, next_v[:, None])  # (B, 1)
    c_loss, c_info = critic.fit({"online": trainable["critic"], "target": critic_target}, batch, targets, k_fit)
    info = {"value/loss": v_loss, "value/v_mean": v.mean(), "value/v_max": v.max(), "value/v_min": v.min(),
            "value/q_target_mean": q.mean(), **c_info}
    return v_loss + c_loss, info


# --- the Gaussian actor ---------------------------------------------------------------------
class GaussianActor(nn.Module):
    """FQL's utils/networks.py Actor (tanh_squash=False, state-independent std): an MLP trunk
    with every layer activated, a mean head (kernel init scale 1e-2) and log std either 0
    (const_std) or a learned (A,) vector, clipped to [log_std_min, log_std_max]."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    activate_before_layernorm: bool = True
    const_std: bool = True
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    final_fc_init_scale: float = 1e-2

    @nn.compact
    def __call__(self, obs):
        h = MLP(tuple(self.hidden_dims), output_dim=None, layer_norm=self.layer_norm,
                activate_before_layernorm=self.activate_before_layernorm, name="trunk")(obs)
        mean = nn.Dense(self.action_dim, kernel_init=default_init(self.final_fc_init_scale), name="mean")(h)
        if self.const_std:
            log_std = jnp.zeros_like(mean)
        else:
            log_std = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(jnp.exp(log_std), mean.shape)


def gaussian_log_prob(mean, std, x):
    """(B,) log N(x; mean, diag(std^2))."""
    z = (x - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * math.log(2.0 * math.pi), axis=-1)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IQL:
    """IQL's actor, value network and the update that trains them with the critic.

    Attributes:
      alpha: AWR inverse temperature ('awr') or BC coefficient ('ddpgbc'); tuned per
        environment (IQL_ALPHA).
      expectile: the expectile of V's regression (IQL_EXPECTILE; reference 0.9).
      actor_loss: 'awr' (reference default) or 'ddpgbc'.
      actor_net: the actor's trunk (reference 4x512, no LayerNorm).
      value_net: V's network (reference: value_hidden_dims 4x512 with LayerNorm).
      const_std: constant std 1 (reference default True); False learns a state-independent
        log std vector.
      lr: Adam learning rate (one optimiser over actor, V and the critic).
      tau: Polyak rate of the critic's target.
      adv_clip: AWR weights are min(exp(alpha * adv), adv_clip) (reference 100).
      grad_clip: global-norm gradient clipping (None: off, as the reference).
    """

    alpha: float = 10.0
    expectile: float = 0.9
    actor_loss: str = "awr"
    actor_net: object = MLPNet(width=512, depth=4, layer_norm=False)
    value_net: object = MLPNet(width=512, depth=4, layer_norm=True)
    const_std: bool = True
    lr: float = 3e-4
    tau: float = 0.005
    adv_clip: float = 100.0
    grad_clip: float | None = None
    name: str = "iql"

    batch_keys = BASE_BATCH_KEYS
    columns = ("iql_alpha", "iql_expectile", "iql_actor_loss")

    def __post_init__(self):
        if self.actor_loss not in ACTOR_LOSSES:
            raise ValueError(f"IQL.actor_loss must be one of {ACTOR_LOSSES}, got {self.actor_loss!r}")
        if not (0.0 < self.expectile < 1.0):
            raise ValueError(f"IQL.expectile must be in (0, 1), got {self.expectile}")
        if self.lr <= 0 or not (0 < self.tau <= 1):
            raise ValueError(f"IQL needs lr > 0 and tau in (0, 1]; got lr={self.lr}, tau={self.tau}")
        if not isinstance(self.actor_net, MLPNet):
            raise ValueError(f"IQL.actor_net must be an MLPNet, got {type(self.actor_net).__name__}")

    # --- networks -----------------------------------------------------------------
    def _actor(self, action_dim):
        n = self.actor_net
        return GaussianActor(hidden_dims=(n.width,) * n.depth, action_dim=action_dim, layer_norm=n.layer_norm,
                             activate_before_layernorm=n.activate_before_layernorm, const_std=self.const_std)

    def actor_dist(self, actor_params, obs, action_dim):
        """(mean, std), each (B, A)."""
        return self._actor(action_dim).apply({"params": actor_params}, obs)

    def optimizer(self):
        tx = optax.adam(self.lr)
        if self.grad_clip is not None:
            tx = optax.chain(optax.clip_by_global_norm(self.grad_clip), tx)
        return tx

    def init(self, rng, critic, obs, act):
        """Initial training state for one seed. obs (B, O), act (B, A) are examples."""
        k_actor, k_value, k_critic, k_state = jax.random.split(rng, 4)
        params = {
            "actor": self._actor(act.shape[-1]).init(k_actor, obs)["params"],
            "value": value_init(self.value_net, k_value, obs),
            "critic": critic.init(k_critic, obs, act),
        }
        opt = self.optimizer().init(_trainable(params))
        return {"params": params, "opt": opt, "rng": k_state, "step": jnp.zeros((), jnp.int32)}

    def param_counts(self, critic, params) -> dict:
        counts = {"actor": count_params(params["actor"]), "value": count_params(params["value"])}
        crit = critic.param_counts(params["critic"])
        counts.update(crit)
        counts["critic_total"] = int(sum(crit.values()))
        counts["total"] = counts["actor"] + counts["value"] + counts["critic_total"]
        return counts

    # --- policy -------------------------------------------------------------------
    def check_critic(self, critic) -> None:
        warn_scalar_target("IQL", critic)

    def policy_params(self, params):
        return {"actor": params["actor"]}

    def act(self, policy_params, obs, noise, explore: bool = False):
        """Evaluation: the mode (clipped mean; the reference evaluates at temperature 0).
        explore=True: mean + std * noise, clipped (temperature 1)."""
        mean, std = self.actor_dist(policy_params["actor"], obs, noise.shape[-1])
        a = mean + std * noise if explore else mean
        return jnp.clip(a, -1.0, 1.0)

    # --- losses -------------------------------------------------------------------
    def actor_loss_fn(self, trainable, critic, batch, rng):
        obs, act = batch["observations"], batch["actions"]
        mean, std = self.actor_dist(trainable["actor"], obs, act.shape[-1])
        log_prob = gaussian_log_prob(mean, std, act)
        frozen = jax.lax.stop_gradient(trainable["critic"])
        info = {"actor/bc_log_prob": log_prob.mean(), "actor/mse": jnp.mean((mean - act) ** 2),
                "actor/std": jnp.mean(std)}
        if self.actor_loss == "awr":
            v = jax.lax.stop_gradient(value_apply(self.value_net, trainable["value"], obs))
            q = critic.q(frozen, obs, act, agg=critic.q_agg)
            adv = q - v
            weights = jnp.minimum(jnp.exp(adv * self.alpha), self.adv_clip)
            loss = -(weights * log_prob).mean()
            info.update({"actor/loss": loss, "actor/adv": adv.mean(), "actor/weight_mean": weights.mean()})
            return loss, info
        # DDPG+BC
        if self.const_std:
            q_actions = jnp.clip(mean, -1.0, 1.0)
        else:
            q_actions = jnp.clip(mean + std * jax.random.normal(rng, mean.shape), -1.0, 1.0)
        q = actor_value(critic, frozen, obs, q_actions, actor_q_key(rng), agg=critic.q_agg)
        q_loss = -q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean())
        bc_loss = -(self.alpha * log_prob).mean()
        loss = q_loss + bc_loss
        info.update({"actor/loss": loss, "actor/q_loss": q_loss, "actor/bc_loss": bc_loss, "actor/q_mean": q.mean(),
                     "actor/q_abs_mean": jnp.abs(q).mean()})
        return loss, info

    def update(self, critic, state, batch):
        """One gradient step on V, the critic and the actor: (state, batch) -> (state, metrics)."""
        params = state["params"]
        new_rng, rng = jax.random.split(state["rng"])
        rng, k_actor = jax.random.split(rng)
        target = params["critic"]["target"]

        def loss_fn(trainable):
            vq_loss, vq_info = value_losses(self.value_net, self.expectile, critic, trainable, target, batch, rng)
            a_loss, a_info = self.actor_loss_fn(trainable, critic, batch, k_actor)
            return vq_loss + a_loss, {**vq_info, **a_info}

        trainable = _trainable(params)
        trainable, opt, info = gradient_step(self.optimizer(), loss_fn, trainable, state["opt"])
        # Polyak towards the online parameters from before this step, as the reference.
        critic_params = critic.target_update(params["critic"], self.tau)
        new_params = {"actor": trainable["actor"], "value": trainable["value"],
                      "critic": {"online": trainable["critic"], "target": critic_params["target"]}}
        return {"params": new_params, "opt": opt, "rng": new_rng, "step": state["step"] + 1}, info

    def describe(self) -> dict:
        return {"algorithm": self.name, "iql_alpha": self.alpha, "iql_expectile": self.expectile,
                "iql_actor_loss": self.actor_loss, "iql_const_std": self.const_std,
                "actor_width": self.actor_net.width, "actor_depth": self.actor_net.depth,
                "value_width": self.value_net.width, "value_depth": self.value_net.depth}


def _trainable(params):
    return {"actor": params["actor"], "value": params["value"], "critic": params["critic"]["online"]}
