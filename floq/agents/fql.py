"""Flow Q-learning (FQL) actor, parameterised by any critic.

Park, Li & Levine (2025), "Flow Q-Learning" (github:seohongpark/fql, agents/fql.py):
a behaviour-cloning flow policy mu_BC(s, x, t) trained by flow matching, integrated with
`flow_steps` Euler steps from x0 ~ N(0, I); and a one-step policy mu(s, x) trained with

    L = alpha * || mu(s, x) - ODE_BC(s, x) ||^2  -  Q(s, clip(mu(s, x)))

(plus the BC flow loss), where Q is the critic's `q()` (for floq: the distilled critic).
The critic is a black box behind floq.critics.base's interface.

State layout (a pytree, everything a run needs to continue exactly):
  {'params': {'actor_bc': ..., 'actor_onestep': ..., 'critic': {'online': ..., 'target': ...}},
   'opt': Adam state over the online parameters only (targets live outside the optimiser),
   'rng': PRNG key, 'step': int32}
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax

from floq.agents.base import BASE_BATCH_KEYS, flattened, gradient_step
from floq.critics.base import actor_value, compute_dtype_of, count_params, repeat_rows
from floq.nets.specs import MLPNet


def actor_q_key(rng):
    """The key of a critic's random actor estimate (`actor_q`), folded from the actor loss's
    key so that the other draws of the actor loss (and the numbers of critics without
    `actor_q`) are unchanged."""
    return jax.random.fold_in(rng, 0x7151)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FQL:
    """FQL's actor and the update that trains actor and critic together.

    Attributes:
      alpha: distillation coefficient (tuned per environment; gin/tasks sets it).
      actor_net: network of both the BC flow policy and the one-step policy.
      flow_steps: Euler steps of the BC flow policy.
      lr: Adam learning rate (shared by actor and critic, as in FQL).
      tau: Polyak rate of the critic's target.
      normalize_q_loss: scale the Q loss by 1 / mean|Q| (stop-gradient).
      clip_actions: clip sampled actions to [-1, 1].
      grad_clip: global-norm gradient clipping (None: off, as in FQL).
      compute_dtype: 'float32' or 'bfloat16': the actor networks' activations (set from
        Trainer.precision by floq.train.with_precision; parameters stay float32).
      flat_adam: Adam over one flattened parameter vector (floq.agents.base.flattened): the
        same state layout, numbers equal within rounding (~1 ulp: XLA fuses the one vector's
        update differently), fewer kernels. Off by default, so that runs keep their bits.
    """

    alpha: float = 10.0
    actor_net: object = MLPNet(width=512, depth=4, layer_norm=False)
    flow_steps: int = 10
    lr: float = 3e-4
    tau: float = 0.005
    normalize_q_loss: bool = False
    clip_actions: bool = True
    grad_clip: float | None = None
    name: str = "fql"
    compute_dtype: str = "float32"
    flat_adam: bool = False

    batch_keys = BASE_BATCH_KEYS
    columns = ("alpha",)  # result columns from describe()

    def __post_init__(self):
        if self.flow_steps < 1:
            raise ValueError(f"FQL.flow_steps must be >= 1, got {self.flow_steps}")
        if not self.alpha >= 0:
            raise ValueError(f"FQL.alpha must be >= 0, got {self.alpha}")
        if self.lr <= 0 or not (0 < self.tau <= 1):
            raise ValueError(f"FQL needs lr > 0 and tau in (0, 1]; got lr={self.lr}, tau={self.tau}")

    # --- networks -----------------------------------------------------------------
    def _bc(self, action_dim):
        return self.actor_net.module(output_dim=action_dim, dtype=compute_dtype_of(self.compute_dtype))

    def _onestep(self, action_dim):
        return self.actor_net.module(output_dim=action_dim, dtype=compute_dtype_of(self.compute_dtype))

    def optimizer(self):
        # flat_adam: one vector, fewer and larger kernels; equal within rounding (1 ulp), not to the bit
        tx = flattened(optax.adam(self.lr)) if self.flat_adam else optax.adam(self.lr)
        if self.grad_clip is not None:
            tx = optax.chain(optax.clip_by_global_norm(self.grad_clip), tx)
        return tx

    def init(self, rng, critic, obs, act):
        """Initial training state for one seed. obs (B, O), act (B, A) are examples."""
        a_dim = act.shape[-1]
        k_bc, k_os, k_critic, k_state = jax.random.split(rng, 4)
        t = act[:, :1]
        params = {
            "actor_bc": self._bc(a_dim).init(k_bc, jnp.concatenate([obs, act, t], -1))["params"],
            "actor_onestep": self._onestep(a_dim).init(k_os, jnp.concatenate([obs, act], -1))["params"],
            "critic": critic.init(k_critic, obs, act),
        }
        opt = self.optimizer().init(_trainable(params))
        return {"params": params, "opt": opt, "rng": k_state, "step": jnp.zeros((), jnp.int32)}

    def param_counts(self, critic, params) -> dict:
        counts = {"actor_bc_flow": count_params(params["actor_bc"]),
                  "actor_onestep": count_params(params["actor_onestep"])}
        crit = critic.param_counts(params["critic"])
        counts.update(crit)
        counts["critic_total"] = int(sum(crit.values()))
        counts["total"] = counts["actor_bc_flow"] + counts["actor_onestep"] + counts["critic_total"]
        return counts

    # --- policies -----------------------------------------------------------------
    def bc_velocity(self, p, obs, x, t):
        return self._bc(x.shape[-1]).apply({"params": p}, jnp.concatenate([obs, x, t], -1))

    def onestep(self, p, obs, noise):
        return self._onestep(noise.shape[-1]).apply({"params": p}, jnp.concatenate([obs, noise], -1))

    def bc_flow_actions(self, p, obs, noise):
        """Euler-integrate the BC flow from noise (B, A) to actions."""
        dt = 1.0 / self.flow_steps

        def body(i, x):
            t = jnp.full((x.shape[0], 1), i * dt, dtype=jnp.float32)
            return x + dt * self.bc_velocity(p, obs, x, t)

        x = jax.lax.fori_loop(0, self.flow_steps, body, noise)
        return jnp.clip(x, -1, 1) if self.clip_actions else x

    def sample_actions(self, params, obs, rng, action_dim: int):
        """One-step policy actions for obs (B, O) -> (B, A)."""
        noise = jax.random.normal(rng, (obs.shape[0], action_dim))
        a = self.onestep(params["actor_onestep"], obs, noise)
        return jnp.clip(a, -1, 1) if self.clip_actions else a

    def act_from_noise(self, params, obs, noise):
        """Deterministic given noise: used by evaluation with per-episode seeded noise."""
        a = self.onestep(params["actor_onestep"], obs, noise)
        return jnp.clip(a, -1, 1) if self.clip_actions else a

    def policy_params(self, params):
        """What evaluation ships: the one-step policy."""
        return {"actor_onestep": params["actor_onestep"]}

    def act(self, policy_params, obs, noise, explore: bool = False):
        """The one-step policy at noise (W, A). Evaluation and exploration both sample it
        (FQL's evaluation and online actions: sample_actions at temperature 1)."""
        return self.act_from_noise(policy_params, obs, noise)

    # --- losses -------------------------------------------------------------------
    def actor_loss(self, trainable, critic, batch, rng):
        obs, act = batch["observations"], batch["actions"]
        b, a_dim = act.shape
        k_x, k_t, k_noise = jax.random.split(rng, 3)

        x0 = jax.random.normal(k_x, (b, a_dim))
        t = jax.random.uniform(k_t, (b, 1))
        xt = (1 - t) * x0 + t * act
        bc_flow_loss = jnp.mean((self.bc_velocity(trainable["actor_bc"], obs, xt, t) - (act - x0)) ** 2)

        noise = jax.random.normal(k_noise, (b, a_dim))
        target_actions = self.bc_flow_actions(jax.lax.stop_gradient(trainable["actor_bc"]), obs, noise)
        actions = self.onestep(trainable["actor_onestep"], obs, noise)
        distill_loss = jnp.mean((actions - target_actions) ** 2)

        if self.clip_actions:
            actions = jnp.clip(actions, -1, 1)
        frozen = jax.lax.stop_gradient(trainable["critic"])
        # the critic's random estimate when it has one (FQL-IQN: released taus), else q
        q = actor_value(critic, frozen, obs, actions, actor_q_key(rng))  # (B,)
        q_loss = -q.mean()
        if self.normalize_q_loss:
            q_loss = q_loss * jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
        loss = bc_flow_loss + self.alpha * distill_loss + q_loss
        return loss, {
            "actor/loss": loss,
            "actor/bc_flow_loss": bc_flow_loss,
            "actor/distill_loss": distill_loss,
            "actor/q_loss": q_loss,
            "actor/q": q.mean(),
            "actor/mse": jnp.mean((jax.lax.stop_gradient(actions) - act) ** 2),
        }

    def update(self, critic, state, batch):
        """One gradient step on actor and critic: (state, batch) -> (state, metrics)."""
        params = state["params"]
        rng, k_next, k_critic, k_actor = jax.random.split(state["rng"], 4)
        b, a_dim = batch["actions"].shape
        n = critic.num_next_actions
        next_obs = repeat_rows(batch["next_observations"], n)  # (B*N, O)
        next_actions = self.sample_actions(params, next_obs, k_next, a_dim).reshape(b, n, a_dim)

        def loss_fn(trainable):
            critic_params = {"online": trainable["critic"], "target": params["critic"]["target"]}
            c_loss, c_info = critic.loss(critic_params, batch, next_actions, k_critic)
            a_loss, a_info = self.actor_loss(trainable, critic, batch, k_actor)
            return c_loss + a_loss, {**c_info, **a_info}

        trainable = _trainable(params)
        trainable, opt, info = gradient_step(self.optimizer(), loss_fn, trainable, state["opt"])
        # Polyak-average the target towards the online parameters from *before* this step, as
        # FQL and the released floq code do.
        critic_params = critic.target_update(params["critic"], self.tau)
        critic_params = {"online": trainable["critic"], "target": critic_params["target"]}
        new_params = {"actor_bc": trainable["actor_bc"], "actor_onestep": trainable["actor_onestep"],
                      "critic": critic_params}
        return {"params": new_params, "opt": opt, "rng": rng, "step": state["step"] + 1}, info

    def describe(self) -> dict:
        return {"algorithm": self.name, "alpha": self.alpha, "actor_width": self.actor_net.width,
                "actor_depth": self.actor_net.depth, "actor_flow_steps": self.flow_steps}


def _trainable(params):
    return {"actor_bc": params["actor_bc"], "actor_onestep": params["actor_onestep"],
            "critic": params["critic"]["online"]}
