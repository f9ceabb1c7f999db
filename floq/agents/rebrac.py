"""ReBRAC: revisited behaviour-regularised actor-critic, parameterised by any critic.

Tarasov et al. (2023), "Revisiting the Minimalist Approach to Offline Reinforcement
Learning"; reproduced from FQL's implementation (github:seohongpark/fql, agents/rebrac.py,
utils/networks.py Actor/MLP, main.py's `full_update=(i % actor_freq == 0)`).

A deterministic actor mu(s) = tanh(W h(s) + b), h an MLP whose every hidden layer is
activated (GELU), the head initialised with variance_scaling(actor_fc_scale, fan_avg,
uniform) (the mode of FQL's tanh-squashed constant-std Gaussian Actor); a separate target
actor. Per update (one Adam over actor + critic online parameters):

  critic: a' = clip(mu_target(s') + clip(0.2 N(0, I), -0.5, 0.5), -1, 1)
          y  = r + gamma * mask * (Q_target(s', a') - alpha_critic * ||a' - a'_data||^2)
          where Q_target aggregates the ensemble by the critic's q_agg (ReBRAC: min, set by
          gin/algorithms/rebrac.gin) and a'_data = batch['next_actions'];
          the critic regresses onto y through critic.fit.
  actor (full updates only, every actor_freq-th update counting from 1):
          a = mu(s); Q = min over the ensemble of the online critic at (s, a) (no gradient
          into the critic); L = -mean(Q) / stop_grad(mean|Q|) + alpha_actor * mean ||a - a_data||^2.
  targets (critic and actor), full updates only: target <- tau * online + (1 - tau) * target
          with the online parameters from BEFORE this update (the reference maps over
          self.network.params, the pre-step parameters).

On critic-only updates the actor's loss is 0, but the one Adam still steps every parameter
(the actor moves by its decaying first moment), as in the reference.

Key use (reference: new_rng, rng = split(rng); rng, actor_rng, critic_rng = split(rng, 3);
_, sample_rng = split(critic_rng)): the same splits; the smoothing noise is drawn from
sample_rng exactly as the reference draws it; the critic's own draws (critic.keys) use the
first half of split(critic_rng), which the reference discards; the actor's Q uses
floq.critics.base.actor_value with actor_rng (deterministic for the monolithic critic).

Deliberate deviations from the reference (none changes a number with the monolithic critic):
  * next actions per state: critic.num_next_actions of them (`repeat_next_actions`), each with
    its own smoothing noise (rows b * N + n), so distributional critics get as many target
    samples as their TD loss averages (floq: R noise draws; IQN: N' fractions). With the
    monolithic critic N = 1, the reference's computation. repeat_next_actions=False uses one.
  * the actor maximises critic.q / actor_q (for floq the distilled critic; for IQN the
    critic's actor estimate), aggregated with 'min' as the reference's min over 2 Qs.
  * metrics: actor metrics are 0 on critic-only updates (the reference logs none there);
    'actor/full_update' is 1 on full updates. train.csv averages the actor metrics over the
    full updates of each log interval only (floq.agents.base.window_means), and
    'actor/full_update' over all updates (the fraction of full updates). 'grad/norm' is the global L2 norm (floq's FQL),
    not the reference's L1 norm of per-leaf L2 norms.

State layout:
  {'params': {'actor': ..., 'target_actor': ..., 'critic': {'online': ..., 'target': ...}},
   'opt': Adam state over {'actor', 'critic': online} (targets live outside the optimiser),
   'rng': PRNG key, 'step': int32 (updates done; the reference's counter i = step + 1)}
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from floq.agents.base import BASE_BATCH_KEYS
from floq.critics.base import actor_value, count_params, polyak, td_targets
from floq.nets.mlp import MLP, default_init
from floq.nets.specs import MLPNet


class DeterministicActor(nn.Module):
    """tanh(Dense(MLP(obs))): every hidden layer activated, head init scale `fc_scale`."""

    net: object
    action_dim: int
    fc_scale: float = 0.01

    @nn.compact
    def __call__(self, obs):
        h = MLP(hidden_dims=(self.net.width,) * self.net.depth, output_dim=None, layer_norm=self.net.layer_norm,
                activate_before_layernorm=self.net.activate_before_layernorm)(obs)
        mean = nn.Dense(self.action_dim, kernel_init=default_init(self.fc_scale))(h)
        return jnp.tanh(mean)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReBRAC:
    """ReBRAC's deterministic actor and the update that trains actor and critic together.

    Attributes:
      alpha_actor: actor BC coefficient (tuned per environment: REBRAC_ALPHA_ACTOR).
      alpha_critic: critic BC coefficient (tuned per environment: REBRAC_ALPHA_CRITIC).
      actor_net: the actor's hidden layers (FQL's ReBRAC: 4 x 512, no LayerNorm).
      actor_fc_scale: init scale of the actor's output layer.
      lr: Adam learning rate (shared by actor and critic).
      tau: Polyak rate of both targets.
      actor_freq: a full update (actor + targets) every actor_freq-th update.
      actor_noise: std of the target smoothing / exploration noise.
      actor_noise_clip: the noise is clipped to +-actor_noise_clip.
      repeat_next_actions: critic.num_next_actions next actions per state (else one).
    """

    alpha_actor: float = 0.0
    alpha_critic: float = 0.0
    actor_net: object = MLPNet(width=512, depth=4, layer_norm=False)
    actor_fc_scale: float = 0.01
    lr: float = 3e-4
    tau: float = 0.005
    actor_freq: int = 2
    actor_noise: float = 0.2
    actor_noise_clip: float = 0.5
    repeat_next_actions: bool = True
    name: str = "rebrac"

    batch_keys = BASE_BATCH_KEYS + ("next_actions",)
    columns = ("rebrac_alpha_actor", "rebrac_alpha_critic")

    def __post_init__(self):
        if self.actor_freq < 1:
            raise ValueError(f"ReBRAC.actor_freq must be >= 1, got {self.actor_freq}")
        if self.lr <= 0 or not (0 < self.tau <= 1):
            raise ValueError(f"ReBRAC needs lr > 0 and tau in (0, 1]; got lr={self.lr}, tau={self.tau}")
        if self.actor_noise < 0 or self.actor_noise_clip < 0:
            raise ValueError(f"ReBRAC needs actor_noise >= 0 and actor_noise_clip >= 0; got "
                             f"{self.actor_noise}, {self.actor_noise_clip}")

    # --- networks -----------------------------------------------------------------
    def _actor(self, action_dim):
        return DeterministicActor(net=self.actor_net, action_dim=action_dim, fc_scale=self.actor_fc_scale)

    def actor(self, p, obs, action_dim):
        """(B, A) the deterministic action tanh(mean) at obs (B, O)."""
        return self._actor(action_dim).apply({"params": p}, obs)

    def optimizer(self):
        return optax.adam(self.lr)

    def init(self, rng, critic, obs, act):
        """Initial training state for one seed. obs (B, O), act (B, A) are examples."""
        k_actor, k_critic, k_state = jax.random.split(rng, 3)
        actor = self._actor(act.shape[-1]).init(k_actor, obs)["params"]
        params = {"actor": actor, "target_actor": jax.tree_util.tree_map(jnp.copy, actor),
                  "critic": critic.init(k_critic, obs, act)}
        opt = self.optimizer().init(_trainable(params))
        return {"params": params, "opt": opt, "rng": k_state, "step": jnp.zeros((), jnp.int32)}

    def param_counts(self, critic, params) -> dict:
        counts = {"actor": count_params(params["actor"])}
        crit = critic.param_counts(params["critic"])
        counts.update(crit)
        counts["critic_total"] = int(sum(crit.values()))
        counts["total"] = counts["actor"] + counts["critic_total"]
        return counts

    # --- policies -----------------------------------------------------------------
    def smoothing(self, noise):
        """clip(actor_noise * noise, +-actor_noise_clip) for standard-normal noise."""
        return jnp.clip(noise * self.actor_noise, -self.actor_noise_clip, self.actor_noise_clip)

    def policy_params(self, params):
        return {"actor": params["actor"]}

    def noise_shape(self, action_dim: int) -> tuple:
        return (action_dim,)

    def act(self, policy_params, obs, noise, explore: bool = False):
        """Evaluation: the deterministic action (the reference's temperature 0). Exploration:
        clip(mu(s) + clip(0.2 * noise, +-0.5), -1, 1) (sample_actions at temperature 1)."""
        a = self.actor(policy_params["actor"], obs, noise.shape[-1])
        if explore:
            a = jnp.clip(a + self.smoothing(noise), -1, 1)
        return a

    # --- losses -------------------------------------------------------------------
    def next_actions(self, target_actor, batch, n, rng):
        """(B, n, A) smoothed target-actor actions at s' (noise rows b * n + i)."""
        b, a_dim = batch["actions"].shape
        mode = self.actor(target_actor, batch["next_observations"], a_dim)  # (B, A)
        noise = jax.random.normal(rng, (b * n, a_dim)).reshape(b, n, a_dim)
        return jnp.clip(mode[:, None, :] + self.smoothing(noise), -1, 1)

    def critic_loss(self, trainable, params, critic, batch, rng):
        k_critic, k_sample = jax.random.split(rng)
        n = critic.num_next_actions if self.repeat_next_actions else 1
        next_actions = self.next_actions(params["target_actor"], batch, n, k_sample)  # (B, N, A)
        k_next, k_fit = critic.keys(k_critic)
        next_values = critic.next_values(params["critic"]["target"], batch["next_observations"], next_actions,
                                         k_next)  # (B, N)
        mse = jnp.square(next_actions - batch["next_actions"][:, None, :]).sum(axis=-1)  # (B, N)
        targets = td_targets(batch, critic.discount, next_values, bonus=-self.alpha_critic * mse)
        critic_params = {"online": trainable["critic"], "target": params["critic"]["target"]}
        loss, info = critic.fit(critic_params, batch, targets, k_fit)
        info = {**info, "critic/next_mse": mse.mean()}
        return loss, info

    def actor_loss(self, trainable, critic, batch, rng):
        obs, act = batch["observations"], batch["actions"]
        actions = self.actor(trainable["actor"], obs, act.shape[-1])
        frozen = jax.lax.stop_gradient(trainable["critic"])
        q = actor_value(critic, frozen, obs, actions, rng, agg="min")  # (B,)
        mse = jnp.square(actions - act).sum(axis=-1)
        lam = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
        q_loss = -(lam * q).mean()
        bc_loss = (self.alpha_actor * mse).mean()
        loss = q_loss + bc_loss
        return loss, {"actor/loss": loss, "actor/q_loss": q_loss, "actor/bc_loss": bc_loss, "actor/q": q.mean(),
                      "actor/mse": mse.mean(), "actor/full_update": jnp.ones((), jnp.float32)}

    def is_full_update(self, step):
        """The reference's full_update = (i % actor_freq == 0) with i = step + 1."""
        return (step + 1) % self.actor_freq == 0

    def loss(self, trainable, params, critic, batch, rng, full):
        """The total loss of trainable {'actor', 'critic'} (the reference's total_loss), with
        rng the reference's `rng` after update's split; full a boolean (traced or not)."""
        _, actor_rng, critic_rng = jax.random.split(rng, 3)
        c_loss, c_info = self.critic_loss(trainable, params, critic, batch, critic_rng)

        def full_branch(t):
            return self.actor_loss(t, critic, batch, actor_rng)

        a_shape = jax.eval_shape(full_branch, trainable)

        def critic_only(t):
            return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), a_shape)

        a_loss, a_info = jax.lax.cond(full, full_branch, critic_only, trainable)
        return c_loss + a_loss, {**c_info, **a_info}

    def update(self, critic, state, batch):
        """One gradient step on actor and critic: (state, batch) -> (state, metrics)."""
        params = state["params"]
        new_rng, rng = jax.random.split(state["rng"])
        full = self.is_full_update(state["step"])
        trainable = _trainable(params)
        grads, info = jax.grad(lambda t: self.loss(t, params, critic, batch, rng, full), has_aux=True)(trainable)
        updates, opt = self.optimizer().update(grads, state["opt"], trainable)
        trainable = optax.apply_updates(trainable, updates)

        # Targets move only on full updates, towards the online parameters from before this step.
        def polyak_targets(_):
            return (polyak(params["actor"], params["target_actor"], self.tau),
                    critic.target_update(params["critic"], self.tau)["target"])

        def keep_targets(_):
            return params["target_actor"], params["critic"]["target"]

        target_actor, critic_target = jax.lax.cond(full, polyak_targets, keep_targets, None)
        new_params = {"actor": trainable["actor"], "target_actor": target_actor,
                      "critic": {"online": trainable["critic"], "target": critic_target}}
        info["grad/norm"] = optax.tree.norm(grads)
        return {"params": new_params, "opt": opt, "rng": new_rng, "step": state["step"] + 1}, info

    def describe(self) -> dict:
        return {"algorithm": self.name, "rebrac_alpha_actor": self.alpha_actor,
                "rebrac_alpha_critic": self.alpha_critic, "actor_width": self.actor_net.width,
                "actor_depth": self.actor_net.depth, "rebrac_actor_freq": self.actor_freq,
                "rebrac_actor_noise": self.actor_noise, "rebrac_actor_noise_clip": self.actor_noise_clip}


def _trainable(params):
    return {"actor": params["actor"], "critic": params["critic"]["online"]}
