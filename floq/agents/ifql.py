"""Implicit flow Q-learning (IFQL), parameterised by any critic.

The flow variant of IDQL (Hansen-Estruch et al. 2023) from the FQL repository
(github:seohongpark/fql, agents/ifql.py), which this module reproduces:

  V, Q      IQL's value learning (floq.agents.iql.value_losses): V by expectile regression
            onto the TARGET critic's Q at dataset actions, Q onto r + gamma * mask * V(s')
  actor     a behaviour-cloning flow policy v(s, x, t) trained by flow matching
            (x_t = (1 - t) x0 + t a, target velocity a - x0), no Q in its loss
  acting    num_samples actions from the BC flow (flow_steps Euler steps from N(0, I)
            noise, clipped to [-1, 1]); the one with the highest ONLINE critic Q (aggregated
            by the critic's q_agg; the reference's min over its two Qs) is taken
  one Adam over the flow, V and the critic's online parameters; the critic's target is
  Polyak-averaged (tau) towards the online parameters from before the step.

Acting needs the critic. The algorithm interface's act() has no critic argument, so IFQL
has an optional `bind_critic(critic) -> IFQL` (a copy holding the configured critic in its
`critic` field, which describe() leaves out); the trainer calls it once before it builds its
programs (floq/loop.py), and policy_params ships the critic's online parameters with the flow.
noise_shape(A) = (num_samples, A): the N flow starts per row. Evaluation and exploration
act the same way (the reference's sample_actions ignores its temperature).

Deviations from the reference (deliberate; tests/agents/test_ifql.py checks the rest):
  * Critic loss scale: as IQL (floq.agents.iql), the monolithic critic's loss and gradients
    are the reference's / num_ensembles (the reference sums over its two Qs).
  * The ensemble aggregation (V's target, the choice among the samples) is the critic's
    q_agg; gin/algorithms/ifql.gin sets Q_AGG = 'min' (the reference's definition).
  * Keys: as the reference for the flow loss (new_rng, rng = split(rng); rng, actor_rng =
    split(rng); _, x_rng, t_rng = split(actor_rng, 3)); the critic's keys come from
    critic.keys(rng) of the leftover key (the monolithic critic draws nothing).
  * act() is batched: one argmax per row of obs (W, O) over its N samples (the reference's
    sample_actions takes one observation).
  * Random critics: see floq.agents.iql (V's target is a noisy estimate of the target Q;
    IQN regresses all quantiles onto the one scalar TD target).
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax

from floq.agents.base import BASE_BATCH_KEYS, gradient_step
from floq.agents.iql import value_init, value_losses, warn_scalar_target
from floq.critics.base import count_params, repeat_rows
from floq.nets.specs import MLPNet


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IFQL:
    """IFQL's BC flow policy, value network and the update that trains them with the critic.

    Attributes:
      expectile: the expectile of V's regression (IFQL_EXPECTILE; reference 0.9).
      num_samples: flow samples per state among which the critic picks (IFQL_NUM_SAMPLES;
        reference 32).
      actor_net: the BC flow's velocity network (reference 4x512, no LayerNorm).
      value_net: V's network (reference: value_hidden_dims 4x512 with LayerNorm).
      flow_steps: Euler steps of the BC flow (reference 10).
      lr: Adam learning rate (one optimiser over flow, V and the critic).
      tau: Polyak rate of the critic's target.
      grad_clip: global-norm gradient clipping (None: off, as the reference).
      critic: the configured critic act() scores samples with; set by bind_critic (the
        trainer), not by gin.
    """

    expectile: float = 0.9
    num_samples: int = 32
    actor_net: object = MLPNet(width=512, depth=4, layer_norm=False)
    value_net: object = MLPNet(width=512, depth=4, layer_norm=True)
    flow_steps: int = 10
    lr: float = 3e-4
    tau: float = 0.005
    grad_clip: float | None = None
    name: str = "ifql"
    critic: object = None

    batch_keys = BASE_BATCH_KEYS
    columns = ("ifql_expectile", "ifql_num_samples")

    def __post_init__(self):
        if not (0.0 < self.expectile < 1.0):
            raise ValueError(f"IFQL.expectile must be in (0, 1), got {self.expectile}")
        if self.num_samples < 1 or self.flow_steps < 1:
            raise ValueError(f"IFQL needs num_samples >= 1 and flow_steps >= 1; got num_samples={self.num_samples}, "
                             f"flow_steps={self.flow_steps}")
        if self.lr <= 0 or not (0 < self.tau <= 1):
            raise ValueError(f"IFQL needs lr > 0 and tau in (0, 1]; got lr={self.lr}, tau={self.tau}")

    def check_critic(self, critic) -> None:
        warn_scalar_target("IFQL", critic)

    def bind_critic(self, critic) -> "IFQL":
        """A copy that acts with `critic` (the configured critic this run trains)."""
        return dataclasses.replace(self, critic=critic)

    # --- networks -----------------------------------------------------------------
    def _flow(self, action_dim):
        return self.actor_net.module(output_dim=action_dim)

    def velocity(self, p, obs, x, t):
        return self._flow(x.shape[-1]).apply({"params": p}, jnp.concatenate([obs, x, t], -1))

    def optimizer(self):
        tx = optax.adam(self.lr)
        if self.grad_clip is not None:
            tx = optax.chain(optax.clip_by_global_norm(self.grad_clip), tx)
        return tx

    def init(self, rng, critic, obs, act):
        """Initial training state for one seed. obs (B, O), act (B, A) are examples."""
        k_flow, k_value, k_critic, k_state = jax.random.split(rng, 4)
        params = {
            "actor_bc": self._flow(act.shape[-1]).init(k_flow, jnp.concatenate([obs, act, act[:, :1]], -1))["params"],
            "value": value_init(self.value_net, k_value, obs),
            "critic": critic.init(k_critic, obs, act),
        }
        opt = self.optimizer().init(_trainable(params))
        return {"params": params, "opt": opt, "rng": k_state, "step": jnp.zeros((), jnp.int32)}

    def param_counts(self, critic, params) -> dict:
        counts = {"actor_bc_flow": count_params(params["actor_bc"]), "value": count_params(params["value"])}
        crit = critic.param_counts(params["critic"])
        counts.update(crit)
        counts["critic_total"] = int(sum(crit.values()))
        counts["total"] = counts["actor_bc_flow"] + counts["value"] + counts["critic_total"]
        return counts

    # --- policy -------------------------------------------------------------------
    def bc_flow_actions(self, p, obs, noise):
        """Euler-integrate the BC flow from noise (B, A) to actions, clipped to [-1, 1]
        (t_i = i / flow_steps and x += v / flow_steps, as the reference)."""
        def body(i, x):
            t = jnp.full((x.shape[0], 1), i / self.flow_steps, dtype=jnp.float32)
            return x + self.velocity(p, obs, x, t) / self.flow_steps

        return jnp.clip(jax.lax.fori_loop(0, self.flow_steps, body, noise), -1.0, 1.0)

    def noise_shape(self, action_dim: int) -> tuple:
        return (self.num_samples, action_dim)

    def policy_params(self, params):
        """What evaluation ships: the BC flow and the online critic that scores its samples."""
        return {"actor_bc": params["actor_bc"], "critic": params["critic"]["online"]}

    def act(self, policy_params, obs, noise, explore: bool = False):
        """The best of N flow samples: noise (W, N, A) -> actions (W, A), the sample with the
        highest online Q (critic.q aggregated by the critic's q_agg). explore does not change
        it (as the reference)."""
        if self.critic is None:
            raise ValueError("IFQL.act needs the critic: use IFQL.bind_critic(critic) first (the trainer does)")
        w, n, a = noise.shape
        obs_n = repeat_rows(obs, n)  # (W*N, O): row w * N + j
        actions = self.bc_flow_actions(policy_params["actor_bc"], obs_n, noise.reshape(w * n, a))
        q = self.critic.q(policy_params["critic"], obs_n, actions, agg=self.critic.q_agg).reshape(w, n)
        best = jnp.argmax(q, axis=1)
        return jnp.take_along_axis(actions.reshape(w, n, a), best[:, None, None], axis=1)[:, 0]

    # --- losses -------------------------------------------------------------------
    def actor_loss_fn(self, trainable, batch, rng):
        obs, act = batch["observations"], batch["actions"]
        b, a_dim = act.shape
        _, k_x, k_t = jax.random.split(rng, 3)
        x0 = jax.random.normal(k_x, (b, a_dim))
        t = jax.random.uniform(k_t, (b, 1))
        xt = (1 - t) * x0 + t * act
        loss = jnp.mean((self.velocity(trainable["actor_bc"], obs, xt, t) - (act - x0)) ** 2)
        return loss, {"actor/loss": loss, "actor/bc_flow_loss": loss}

    def update(self, critic, state, batch):
        """One gradient step on V, the critic and the flow: (state, batch) -> (state, metrics)."""
        params = state["params"]
        new_rng, rng = jax.random.split(state["rng"])
        rng, k_actor = jax.random.split(rng)
        target = params["critic"]["target"]

        def loss_fn(trainable):
            vq_loss, vq_info = value_losses(self.value_net, self.expectile, critic, trainable, target, batch, rng)
            a_loss, a_info = self.actor_loss_fn(trainable, batch, k_actor)
            return vq_loss + a_loss, {**vq_info, **a_info}

        trainable = _trainable(params)
        trainable, opt, info = gradient_step(self.optimizer(), loss_fn, trainable, state["opt"])
        critic_params = critic.target_update(params["critic"], self.tau)
        new_params = {"actor_bc": trainable["actor_bc"], "value": trainable["value"],
                      "critic": {"online": trainable["critic"], "target": critic_params["target"]}}
        return {"params": new_params, "opt": opt, "rng": new_rng, "step": state["step"] + 1}, info

    def describe(self) -> dict:
        return {"algorithm": self.name, "ifql_expectile": self.expectile, "ifql_num_samples": self.num_samples,
                "actor_width": self.actor_net.width, "actor_depth": self.actor_net.depth,
                "actor_flow_steps": self.flow_steps, "value_width": self.value_net.width,
                "value_depth": self.value_net.depth}


def _trainable(params):
    return {"actor_bc": params["actor_bc"], "value": params["value"], "critic": params["critic"]["online"]}
