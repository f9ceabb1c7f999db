"""Soft actor-critic (SAC) actor, parameterised by any critic; with balanced sampling and no
offline phase it is the RLPD baseline of the FQL paper (gin/algorithms/rlpd.gin).

Haarnoja et al. (2018), "Soft Actor-Critic"; Ball et al. (2023), "Efficient Online RL with
Offline Data" (RLPD). Reference: github:seohongpark/fql agents/sac.py (+ utils/networks.py
Actor with tanh_squash and state_dependent_std, LogParam), whose equations this follows:

  policy     u = mu(s) + sigma(s) * eps, eps ~ N(0, I), a = tanh(u),
             log sigma(s) = clip(head(s), log_std_min, log_std_max)
             log pi(a|s) = sum_i [log N(eps_i) - log sigma_i(s)] - sum_i 2 (log 2 - u_i - softplus(-2 u_i))
             (distrax's Tanh log-det-Jacobian, stable form)
  critic     target r + gamma * mask * (agg_e Q_target_e(s', a') - [backup_entropy] alpha log pi(a'|s')),
             a' ~ pi(.|s'); in floq: critic.next_values(target, s', a') with
             bonus = -alpha * log pi(a'|s') through floq.critics.base.td_targets, which is the
             reference's r + gamma*mask*next_q - gamma*mask*alpha*log pi exactly
  actor      E[alpha * log pi(a|s) - mean_e Q_e(s, a)], a ~ pi(.|s) reparameterised, the critic
             frozen (the reference's actor loss reads the online critic without gradients)
  alpha      alpha = exp(log_alpha) (LogParam, init 1), loss alpha * (H - target_entropy) with
             H = -mean(stop_grad(log pi)); target_entropy = -target_entropy_multiplier * A
             (0.5 * A by default) unless given; actor and target use the pre-step alpha
             (stop-gradient)

ONE Adam over actor, log_alpha and the critic's online parameters (the reference's single
TrainState over its ModuleDict; its target critic sits in the optimiser too but always gets
zero gradients, so Adam leaves it unchanged); the critic's target is Polyak-averaged towards
the online parameters from before the step, as the reference's target_update reads
self.network (the pre-step network).

Key splits (the reference's): rng' , key = split(rng); _, k_actor, k_critic = split(key, 3);
the next actions use split(k_critic)[1]; the actor's reparameterised draw uses k_actor.

Actions: evaluation is the reference's evaluate(eval_temperature=0): tanh(mu(s)) (the noise
is ignored); exploration (online phase, main.py's sample_actions(temperature=1)):
tanh(mu(s) + sigma(s) * noise), clipped to [-1, 1].

Deliberate deviations from the reference (none change its numbers with the monolithic critic):
  * The critic is floq's interface: with a critic drawing N = num_next_actions > 1 next actions
    per state (floq, IQN) the policy samples N actions per next state (rows b*N + n) and the
    entropy bonus is per action; the critic's own keys are critic.keys(fold_in(k_critic, .))
    and the actor's random Q estimate (actor_q, IQN) uses fold_in(k_actor, .), so those draws
    never coincide with the policy's noise (the monolithic critic draws nothing).
  * Only the reference's default actor (tanh_squash=True, state_dependent_std=True, no
    encoder); its other Actor variants are not offered.
  * The actor's Q is always the ensemble mean (as the reference); the target's aggregation is
    the critic's q_agg (the reference's config q_agg, default 'min': gin/algorithms/sac.gin).
  * Metrics: 'grad/norm' is the global L2 norm of the gradients (the reference logs the sum of
    per-leaf norms).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from floq.agents.base import BASE_BATCH_KEYS, gradient_step
from floq.critics.base import actor_value, count_params, repeat_rows, td_targets
from floq.nets.mlp import default_init
from floq.nets.specs import MLPNet

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def critic_key(k_critic):
    """The key the critic's own draws (critic.keys) split from: folded from the critic loss's
    key so that it never equals the next actions' split(k_critic)[1]."""
    return jax.random.fold_in(k_critic, 0x5AC0)


def actor_q_key(k_actor):
    """The key of a critic's random actor estimate (actor_q), folded from the actor's key."""
    return jax.random.fold_in(k_actor, 0x7151)


class GaussianActor(nn.Module):
    """The reference's Actor (tanh_squash, state_dependent_std): an MLP trunk whose every
    hidden layer is activated, then linear heads for the mean and the log std (kernels
    variance-scaling(final_fc_scale, fan_avg, uniform)); log std clipped."""

    trunk: nn.Module
    action_dim: int
    final_fc_scale: float = 0.01
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs):
        h = self.trunk(obs)
        mean = nn.Dense(self.action_dim, kernel_init=default_init(self.final_fc_scale), name="mean")(h)
        log_std = nn.Dense(self.action_dim, kernel_init=default_init(self.final_fc_scale), name="log_std")(h)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


def tanh_gaussian_sample(mean, log_std, eps):
    """(actions, log_probs): a = tanh(mean + exp(log_std) * eps) and log pi(a), (..., A) -> (...,)
    as distrax's Transformed(MultivariateNormalDiag, Block(Tanh)).sample_and_log_prob."""
    u = mean + jnp.exp(log_std) * eps
    base = jnp.sum(-0.5 * jnp.square(eps) - _HALF_LOG_2PI, axis=-1) - jnp.sum(log_std, axis=-1)
    log_det = jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
    return jnp.tanh(u), base - log_det


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SAC:
    """SAC's tanh-Gaussian actor, learned temperature, and the update that trains actor,
    temperature and critic together.

    Attributes:
      actor_net: the actor's trunk (an MLPNet; every hidden layer activated, no output layer).
      lr: Adam learning rate (shared by actor, temperature and critic, as the reference).
      tau: Polyak rate of the critic's target.
      target_entropy: fixed target entropy (None: -target_entropy_multiplier * action_dim).
      target_entropy_multiplier: see target_entropy (reference default 0.5).
      backup_entropy: subtract alpha * gamma * mask * log pi(a'|s') in the critic's target
        (reference default False).
      init_alpha: the temperature's initial value (the reference's LogParam: 1.0).
      actor_fc_scale: initialisation scale of the mean and log-std heads (reference 0.01).
      log_std_min, log_std_max: the log std clip (reference -5, 2).
    """

    actor_net: object = MLPNet(width=512, depth=4, layer_norm=False)
    lr: float = 3e-4
    tau: float = 0.005
    target_entropy: float | None = None
    target_entropy_multiplier: float = 0.5
    backup_entropy: bool = False
    init_alpha: float = 1.0
    actor_fc_scale: float = 0.01
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    name: str = "sac"

    batch_keys = BASE_BATCH_KEYS
    columns = ("sac_target_entropy_multiplier", "sac_target_entropy", "sac_backup_entropy")

    def __post_init__(self):
        if not isinstance(self.actor_net, MLPNet):
            raise ValueError(f"SAC.actor_net must be an MLPNet, got {type(self.actor_net).__name__}")
        if self.lr <= 0 or not (0 < self.tau <= 1):
            raise ValueError(f"SAC needs lr > 0 and tau in (0, 1]; got lr={self.lr}, tau={self.tau}")
        if not self.init_alpha > 0:
            raise ValueError(f"SAC.init_alpha must be > 0, got {self.init_alpha}")
        if not self.log_std_min <= self.log_std_max:
            raise ValueError(f"SAC needs log_std_min <= log_std_max, got {self.log_std_min}, {self.log_std_max}")

    # --- networks -----------------------------------------------------------------
    def _actor(self, action_dim):
        return GaussianActor(trunk=self.actor_net.module(output_dim=None), action_dim=action_dim,
                             final_fc_scale=self.actor_fc_scale, log_std_min=self.log_std_min,
                             log_std_max=self.log_std_max)

    def optimizer(self):
        return optax.adam(self.lr)

    def target_entropy_for(self, action_dim: int) -> float:
        if self.target_entropy is not None:
            return float(self.target_entropy)
        return -self.target_entropy_multiplier * action_dim

    def init(self, rng, critic, obs, act):
        """Initial training state for one seed. obs (B, O), act (B, A) are examples."""
        k_actor, k_critic, k_state = jax.random.split(rng, 3)
        params = {
            "actor": self._actor(act.shape[-1]).init(k_actor, obs)["params"],
            "log_alpha": jnp.full((), math.log(self.init_alpha), jnp.float32),
            "critic": critic.init(k_critic, obs, act),
        }
        opt = self.optimizer().init(_trainable(params))
        return {"params": params, "opt": opt, "rng": k_state, "step": jnp.zeros((), jnp.int32)}

    def param_counts(self, critic, params) -> dict:
        counts = {"actor": count_params(params["actor"]), "alpha": count_params(params["log_alpha"])}
        crit = critic.param_counts(params["critic"])
        counts.update(crit)
        counts["critic_total"] = int(sum(crit.values()))
        counts["total"] = counts["actor"] + counts["alpha"] + counts["critic_total"]
        return counts

    # --- policies -----------------------------------------------------------------
    def dist(self, actor_params, obs, action_dim: int):
        """(mean, clipped log std), each (B, A)."""
        return self._actor(action_dim).apply({"params": actor_params}, obs)

    def sample(self, actor_params, obs, eps):
        """Reparameterised (actions, log_probs) at obs (B, O) from standard-normal eps (B, A)."""
        mean, log_std = self.dist(actor_params, obs, eps.shape[-1])
        return tanh_gaussian_sample(mean, log_std, eps)

    def policy_params(self, params):
        return {"actor": params["actor"]}

    def act(self, policy_params, obs, noise, explore: bool = False):
        """Evaluation: tanh(mean) (the reference's eval_temperature=0); exploration:
        tanh(mean + std * noise) (temperature 1), clipped to [-1, 1] as sample_actions."""
        mean, log_std = self.dist(policy_params["actor"], obs, noise.shape[-1])
        u = mean + jnp.exp(log_std) * noise if explore else mean
        return jnp.clip(jnp.tanh(u), -1, 1)

    # --- losses -------------------------------------------------------------------
    def actor_loss(self, trainable, critic, batch, rng, alpha):
        obs = batch["observations"]
        b, a_dim = batch["actions"].shape
        eps = jax.random.normal(rng, (b, a_dim))
        mean, log_std = self.dist(trainable["actor"], obs, a_dim)
        actions, log_probs = tanh_gaussian_sample(mean, log_std, eps)
        frozen = jax.lax.stop_gradient(trainable["critic"])
        q = actor_value(critic, frozen, obs, actions, actor_q_key(rng), agg="mean")  # (B,)
        actor_loss = jnp.mean(log_probs * alpha - q)

        alpha_grad = jnp.exp(trainable["log_alpha"])
        entropy = -jnp.mean(jax.lax.stop_gradient(log_probs))
        alpha_loss = alpha_grad * (entropy - self.target_entropy_for(a_dim))
        loss = actor_loss + alpha_loss
        return loss, {
            "actor/loss": loss,
            "actor/actor_loss": actor_loss,
            "actor/alpha_loss": alpha_loss,
            "actor/alpha": alpha_grad,
            "actor/entropy": -jnp.mean(log_probs),
            "actor/std": jnp.mean(jnp.exp(log_std)),
            "actor/q": q.mean(),
        }

    def critic_targets(self, critic, params, batch, k_critic, alpha):
        """(B, N) TD targets: next actions a' ~ pi(.|s') (N per state), the target critic's
        next_values and, with backup_entropy, the bonus -alpha * log pi(a'|s')."""
        b, a_dim = batch["actions"].shape
        n = critic.num_next_actions
        _, k_sample = jax.random.split(k_critic)
        k_next, k_fit = critic.keys(critic_key(k_critic))
        next_obs = repeat_rows(batch["next_observations"], n)  # (B*N, O)
        eps = jax.random.normal(k_sample, (b * n, a_dim))
        next_actions, next_log_probs = self.sample(params["actor"], next_obs, eps)
        next_actions = next_actions.reshape(b, n, a_dim)
        next_values = critic.next_values(params["critic"]["target"], batch["next_observations"], next_actions, k_next)
        bonus = -alpha * next_log_probs.reshape(b, n) if self.backup_entropy else None
        return td_targets(batch, critic.discount, next_values, bonus), k_fit

    def update(self, critic, state, batch):
        """One gradient step on actor, temperature and critic: (state, batch) -> (state, metrics)."""
        params = state["params"]
        rng, key = jax.random.split(state["rng"])
        _, k_actor, k_critic = jax.random.split(key, 3)
        alpha = jnp.exp(params["log_alpha"])  # the pre-step temperature, no gradient
        targets, k_fit = self.critic_targets(critic, params, batch, k_critic, alpha)
        targets = jax.lax.stop_gradient(targets)

        def loss_fn(trainable):
            critic_params = {"online": trainable["critic"], "target": params["critic"]["target"]}
            c_loss, c_info = critic.fit(critic_params, batch, targets, k_fit)
            a_loss, a_info = self.actor_loss(trainable, critic, batch, k_actor, alpha)
            return c_loss + a_loss, {**c_info, **a_info}

        trainable = _trainable(params)
        trainable, opt, info = gradient_step(self.optimizer(), loss_fn, trainable, state["opt"])
        critic_params = critic.target_update(params["critic"], self.tau)  # towards the pre-step online
        new_params = {"actor": trainable["actor"], "log_alpha": trainable["log_alpha"],
                      "critic": {"online": trainable["critic"], "target": critic_params["target"]}}
        return {"params": new_params, "opt": opt, "rng": rng, "step": state["step"] + 1}, info

    def describe(self) -> dict:
        return {"algorithm": self.name, "actor_width": self.actor_net.width, "actor_depth": self.actor_net.depth,
                "sac_target_entropy_multiplier": self.target_entropy_multiplier,
                "sac_target_entropy": "auto" if self.target_entropy is None else float(self.target_entropy),
                "sac_backup_entropy": bool(self.backup_entropy), "sac_init_alpha": self.init_alpha,
                "sac_lr": self.lr, "sac_tau": self.tau}


def _trainable(params):
    return {"actor": params["actor"], "log_alpha": params["log_alpha"], "critic": params["critic"]["online"]}
