"""floq: a flow-matching critic (Agrawalla et al. 2025, "floq: Training Critics via
Flow-Matching for Scaling Compute in Value-Based RL"; released code github:CMU-AIRe/floq).

Q(s, a) is the end point of the ODE dz/dt = v(s, a, z, t) integrated from
z0 ~ U[noise_min, noise_max] at t = 0 to t = 1 with K Euler steps. The velocity field is
trained by flow matching towards TD targets: for y = r + gamma * mask * Q_target(s', a'),
z_t = (1 - t) z0 + t y and the field regresses y - z0 at (s, a, z_t, t). A scalar critic
distilled from the integrated returns is what the actor maximises.

Shapes: B batch, R = noise_samples, E = num_ensembles (field), D = distill_ensembles,
N = B * R rows (row b*R + r is sample r of state b).
"""

from __future__ import annotations

import dataclasses
import warnings

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from floq.critics.base import (bind_reward_range, value_range, Q_AGGREGATIONS, REWARD_RANGE_RULES, aggregate, compute_dtype_of, count_params, polyak,
                               repeat_rows, td_loss, td_targets, validate)
from floq.critics.monolithic import act_concat
from floq.nets.embeddings import TIME_EMBEDDINGS, hl_gauss_probs, time_embedding
from floq.nets.mlp import ensemble_of
from floq.nets.specs import MLPNet


class VelocityField(nn.Module):
    """Ensemble of velocity fields v_e(s, a, z_e, t) -> (E, N).

    The field's input is tiled to (E, N, features) and the E networks are vmapped over the
    leading axis (the released code's explicit ensemble axis), so each member integrates
    its own z.
    """

    net: object
    num_ensembles: int
    q_min: float
    q_max: float
    prob_embed: bool
    num_bins: int
    sigma: float
    time_embed: str
    time_embed_dim: int
    dtype: object = None

    @nn.compact
    def __call__(self, obs, act, z, t):
        """obs (N, O), act (N, A), z (E, N), t (N, 1) -> velocities (E, N)."""
        e, n = z.shape
        sa = jnp.broadcast_to(act_concat(obs, act)[None], (e, n, obs.shape[-1] + act.shape[-1]))
        if self.prob_embed:
            z_feat = hl_gauss_probs(z, self.q_min, self.q_max, self.num_bins, self.sigma)  # (E, N, bins-1)
        else:
            z_feat = ((z - self.q_min) / (self.q_max - self.q_min))[..., None]  # (E, N, 1)
        t_feat = time_embedding(t, self.time_embed, self.time_embed_dim)  # (N, F)
        t_feat = jnp.broadcast_to(t_feat[None], (e, n, t_feat.shape[-1]))
        x = jnp.concatenate([sa, z_feat, t_feat], axis=-1)
        v = ensemble_of(self.net, self.num_ensembles, in_axes=0, dtype=self.dtype)(x)
        return v[..., 0]


def integrate(field_fn, z0: jnp.ndarray, num_steps: int) -> jnp.ndarray:
    """Euler-integrate dz/dt = field_fn(z, t) from t = 0 to 1 in `num_steps` steps.

    Args:
      field_fn: (z (E, N), t (N, 1)) -> (E, N).
      z0: (E, N) start values.

    Returns:
      (E, N) end values (z0 may carry leading axes, (..., E, N): `field_fn` then takes and
      returns that shape). Gradients are stopped: the loop keeps no activations, so memory
      does not grow with num_steps.
    """
    n = z0.shape[-1]
    dt = 1.0 / num_steps

    def body(i, z):
        t = jnp.full((n, 1), i * dt, dtype=jnp.float32)
        return z + dt * field_fn(z, t)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, num_steps, body, z0))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FloqCritic:
    """The flow-matching critic (floq) with its distilled scalar critic.

    Attributes:
      field_net: network spec of the velocity field (`@MLPNet()` or `@ResNet()`).
      distill_net: network spec of the distilled scalar critic the actor maximises.
      flow_steps: K, Euler steps of the critic flow.
      noise_samples: R, noise draws (and sampled next actions) per transition.
      noise_coverage: noise interval = coverage * [r_min, r_max] / (1 - gamma).
      num_ensembles: E, velocity-field ensemble size.
      distill_ensembles: ensemble size of the distilled critic.
      q_agg: aggregation of target returns over E ('mean' or 'min').
      reward_offset: widening of the HL-Gauss support: q_min/max = (r_min/max -/+ offset)/(1-gamma).
      prob_embed: HL-Gauss embedding of z (else z rescaled to [0, 1] by the support).
      num_bins, sigma: HL-Gauss support size and width (sigma in bin widths).
      time_embed: 'cos' (released code), 'fourier' (paper text), or 'none'.
      time_embed_dim: Fourier features when time_embed == 'fourier'.
      train_at_zero_only: flow matching only at t = 0 (with K = 1: a one-step regression).
        'auto' (the default): True exactly when K = 1, the released code's one-step setting
        (its K = 1 runs pass --agent.train_at_zero_only); resolved here, so `floq run` and a
        sweep train K = 1 alike and the spec always holds a bool.
      r_min, r_max: reward range; None = read from the training data by configure().
      reward_range_rule: how the trainer reads that range from the training rewards
        (floq.critics.base.reward_range): 'released' (the released code's: always includes
        0) or 'data' (the raw range).
    """

    field_net: object = MLPNet()
    distill_net: object = MLPNet()
    flow_steps: int = 8
    noise_samples: int = 8
    noise_coverage: float = 0.1
    num_ensembles: int = 2
    distill_ensembles: int = 2
    q_agg: str = "mean"
    reward_offset: float = 0.01
    prob_embed: bool = True
    num_bins: int = 51
    sigma: float = 16.0
    time_embed: str = "cos"
    time_embed_dim: int = 64
    train_at_zero_only: bool | str = "auto"
    r_min: float | None = None
    r_max: float | None = None
    reward_range_rule: str = "released"
    discount: float = 0.99
    name: str = "floq"
    compute_dtype: str = "float32"

    #: Which `floq bench` rows give this critic's FLOP rate in cost estimates (floq.launch.cost).
    bench_family = "floq"

    def __post_init__(self):
        if self.train_at_zero_only == "auto":
            object.__setattr__(self, "train_at_zero_only", self.flow_steps == 1)
        checks = [
            (isinstance(self.train_at_zero_only, bool),
             f"train_at_zero_only must be True, False or 'auto', got {self.train_at_zero_only!r}"),
            (self.flow_steps >= 1, f"flow_steps (K) must be >= 1, got {self.flow_steps}"),
            (self.noise_samples >= 1, f"noise_samples must be >= 1, got {self.noise_samples}"),
            (self.noise_coverage > 0, f"noise_coverage must be > 0, got {self.noise_coverage}"),
            (self.num_ensembles >= 1, f"num_ensembles must be >= 1, got {self.num_ensembles}"),
            (self.distill_ensembles >= 1, f"distill_ensembles must be >= 1, got {self.distill_ensembles}"),
            (self.q_agg in Q_AGGREGATIONS, f"q_agg must be one of {Q_AGGREGATIONS}, got {self.q_agg!r}"),
            (self.time_embed in TIME_EMBEDDINGS, f"time_embed must be one of {TIME_EMBEDDINGS}, got {self.time_embed!r}"),
            (self.num_bins >= 3, f"num_bins must be >= 3, got {self.num_bins}"),
            (self.sigma > 0, f"sigma must be > 0, got {self.sigma}"),
            (0.0 < self.discount < 1.0, f"discount must be in (0, 1), got {self.discount}"),
            (self.reward_range_rule in REWARD_RANGE_RULES,
             f"reward_range_rule must be one of {REWARD_RANGE_RULES}, got {self.reward_range_rule!r}"),
        ]
        if self.r_min is not None and self.r_max is not None:
            checks.append((self.r_min <= self.r_max, f"r_min ({self.r_min}) must be <= r_max ({self.r_max})"))
        validate(checks)
        if self.flow_steps == 1 and not self.train_at_zero_only and self.time_embed == "cos":
            # With one Euler step the field is only read at t = 0, where cos(t) is flat; the
            # known-answer tests show a ~9-15% bias in Q. The released code pairs K = 1 with
            # train_at_zero_only, which makes it an exact regression.
            warnings.warn("FloqCritic: flow_steps=1 with train_at_zero_only=False and time_embed='cos' is "
                          "biased; set train_at_zero_only=True for a one-step critic", stacklevel=2)

    # --- task binding -------------------------------------------------------------
    def configure(self, discount: float, r_min: float, r_max: float):
        """Bind gamma and the reward range; pinned r_min/r_max (gin) take precedence."""
        return bind_reward_range(self, discount, r_min, r_max)

    @property
    def q_range(self) -> tuple[float, float]:
        return value_range(self.r_min, self.r_max, self.discount, self.reward_offset)

    @property
    def noise_range(self) -> tuple[float, float]:
        scale = self.noise_coverage / (1.0 - self.discount)
        return self.r_min * scale, self.r_max * scale

    @property
    def num_next_actions(self) -> int:
        return self.noise_samples

    # --- networks -----------------------------------------------------------------
    @property
    def _dtype(self):
        return compute_dtype_of(self.compute_dtype)

    @property
    def _field(self) -> VelocityField:
        if self.r_min is None or self.r_max is None:
            raise ValueError("FloqCritic.configure(discount, r_min, r_max) must be called before use")
        q_min, q_max = self.q_range
        return VelocityField(
            net=self.field_net, num_ensembles=self.num_ensembles, q_min=q_min, q_max=q_max,
            prob_embed=self.prob_embed, num_bins=self.num_bins, sigma=self.sigma,
            time_embed=self.time_embed, time_embed_dim=self.time_embed_dim, dtype=self._dtype,
        )

    @property
    def _distill(self):
        return ensemble_of(self.distill_net, self.distill_ensembles, dtype=self._dtype)

    def init(self, rng, obs, act):
        k_field, k_distill = jax.random.split(rng)
        n = obs.shape[0]
        z = jnp.zeros((self.num_ensembles, n))
        t = jnp.zeros((n, 1))
        online = {
            "field": self._field.init(k_field, obs, act, z, t)["params"],
            "distill": self._distill.init(k_distill, act_concat(obs, act))["params"],
        }
        return {"online": online, "target": {"field": jax.tree_util.tree_map(jnp.copy, online["field"])}}

    # --- pure functions -----------------------------------------------------------
    def velocity(self, field_params, obs, act, z, t):
        """(E, N) velocities at obs (N, O), act (N, A), z (E, N), t (N, 1)."""
        return self._field.apply({"params": field_params}, obs, act, z, t)

    def noise(self, u: jnp.ndarray) -> jnp.ndarray:
        """Map uniforms u in [0, 1] to start values in [noise_min, noise_max]."""
        lo, hi = self.noise_range
        return (1.0 - u) * lo + u * hi

    def returns(self, field_params, obs, act, u):
        """Integrated returns, (E, N), from start values noise(u) (u: (N,))."""
        z0 = jnp.broadcast_to(self.noise(u)[None], (self.num_ensembles, u.shape[0]))
        # No gradient flows through integration: stopping it at the inputs (not just the
        # output) keeps autodiff from storing K steps of activations.
        field_params, obs, act = jax.lax.stop_gradient((field_params, obs, act))
        return integrate(lambda z, t: self.velocity(field_params, obs, act, z, t), z0, self.flow_steps)

    def returns_stacked(self, fields, obs, act, u):
        """Several integrations of equal shape in ONE Euler loop: (P, E, N) returns.

        `fields` are field parameters stacked on a leading axis of size P (e.g. the target and
        the online field), obs (P, N, O), act (P, N, A), u (P, N): pass p integrates field p
        from noise(u[p]) at (obs[p], act[p]). Each step evaluates the P fields in one vmapped
        call, so a flow step launches one set of kernels instead of P; pass p's numbers are
        those of `returns(fields[p], obs[p], act[p], u[p])` (tests/critics/test_flow_critic.py::
        test_one_loop_for_online_and_target_gives_the_two_loop_numbers)."""
        p, n = u.shape
        z0 = jnp.broadcast_to(self.noise(u)[:, None], (p, self.num_ensembles, n))
        fields, obs, act = jax.lax.stop_gradient((fields, obs, act))
        field = jax.vmap(self.velocity, in_axes=(0, 0, 0, 0, None))
        return integrate(lambda z, t: field(fields, obs, act, z, t), z0, self.flow_steps)

    def distilled(self, distill_params, obs, act):
        """(D, B) distilled Q values."""
        return self._distill.apply({"params": distill_params}, act_concat(obs, act))[..., 0]

    def q(self, online, obs, act, agg: str = "mean"):
        return aggregate(self.distilled(online["distill"], obs, act), agg)

    def flow_q(self, online, obs, act, rng, num_samples: int | None = None):
        """Q by integration, averaged over noise draws and ensemble members: (B,)."""
        r = num_samples or self.noise_samples
        b = obs.shape[0]
        u = jax.random.uniform(rng, (b * r,))
        z = self.returns(online["field"], repeat_rows(obs, r), repeat_rows(act, r), u)
        return z.reshape(self.num_ensembles, b, r).mean(axis=(0, 2))

    def keys(self, rng):
        k_next, k_cur, k_t = jax.random.split(rng, 3)
        return k_next, (k_cur, k_t)

    def next_values(self, target, next_obs, next_actions, rng):
        """(B, N): the target field integrated from one noise draw per next action (row
        b * N + n), aggregated over the field ensemble by q_agg."""
        b, n, _ = next_actions.shape
        return self.next_returns(target["field"], next_obs, next_actions, jax.random.uniform(rng, (b * n,)))

    def next_returns(self, target_field, next_obs, next_actions, u_next):
        """(B, N) next_values from given uniforms u_next (B * N,) of the start values."""
        b, n, _ = next_actions.shape
        z_next = self.returns(target_field, repeat_rows(next_obs, n), next_actions.reshape(b * n, -1),
                              u_next)  # (E, B*N)
        return aggregate(z_next, self.q_agg).reshape(b, n)

    def td_targets(self, target_field, batch, next_actions, u_next):
        """TD targets (B,) from given uniforms: r + gamma * mask * next returns, averaged over
        the R noise draws and R next actions (what fit regresses onto)."""
        nv = self.next_returns(target_field, batch["next_observations"], next_actions, u_next)  # (B, R)
        return td_targets(batch, self.discount, nv).mean(axis=1)

    def fit(self, params, batch, targets, rng, current=None, u=None):
        """Flow matching of every field member towards the (B, N) targets averaged over N
        (the TD target y), at R noise draws per transition, plus distillation of the scalar
        critic onto the integrated returns. rng: the fit key of `keys`. `current`: the online
        field's (E, B*R) returns from the uniforms of rng's first key, when the caller has
        integrated them already (`loss`: in the target integration's loop), with `u` the
        uniforms it drew from that key (the same numbers: drawn once)."""
        k_cur, k_t = rng
        b = batch["observations"].shape[0]
        r = self.noise_samples
        e = self.num_ensembles
        online = params["online"]

        y = jax.lax.stop_gradient(td_targets := targets.mean(axis=1))  # (B,)
        obs = repeat_rows(batch["observations"], r)  # (B*R, O)
        act = repeat_rows(batch["actions"], r)  # (B*R, A)

        # One set of noise draws seeds both the current-return integration and the FM start.
        if u is None:
            u = jax.random.uniform(k_cur, (b * r,))
        z0 = self.noise(u)  # (B*R,)
        if current is None:
            current = self.returns(online["field"], obs, act, u)
        current = current.reshape(e, b, r)  # (E, B, R), no gradient

        if self.train_at_zero_only:
            t = jnp.zeros((b * r, 1))
        else:
            t = jax.random.uniform(k_t, (b * r, 1))
        x1 = repeat_rows(y, r)  # (B*R,)
        zt = (1.0 - t[:, 0]) * z0 + t[:, 0] * x1  # (B*R,)
        zt = jnp.broadcast_to(zt[None], (e, b * r))
        pred = self.velocity(online["field"], obs, act, zt, t)  # (E, B*R)
        fm = jnp.sum(((pred - (x1 - z0)[None]) ** 2).reshape(e, b, r), axis=-1)  # (E, B): summed over R
        fm_loss = fm.mean()

        distill_target = jax.lax.stop_gradient(current.mean(axis=(0, 2)))  # (B,)
        qd = self.distilled(online["distill"], batch["observations"], batch["actions"])  # (D, B)
        distill_loss = jnp.mean((qd - distill_target[None]) ** 2)

        loss = fm_loss + distill_loss
        cur_mean = current.mean(axis=0)  # (B, R)
        return loss, {
            "critic/loss": loss,
            "critic/flow_loss": fm_loss,
            "critic/distill_loss": distill_loss,
            "critic/q_mean": qd.mean(),
            "critic/q_max": qd.max(),
            "critic/q_min": qd.min(),
            "critic/flow_q_mean": cur_mean.mean(),
            "critic/flow_return_var": jnp.var(cur_mean, axis=-1).mean(),
            "critic/target_mean": td_targets.mean(),
            "critic/td_error": jnp.mean((cur_mean.mean(axis=-1) - y) ** 2),
        }

    def loss(self, params, batch, next_actions, rng):
        """`td_loss` (the same keys, draws and numbers) with the target field's integration
        (next returns) and the online field's (current returns, distillation target) in one
        Euler loop over the stacked parameters (`returns_stacked`): both have B * R rows."""
        b, n, _ = next_actions.shape
        r = self.noise_samples
        if n != r:  # passes of different shapes: one loop each
            return td_loss(self, params, batch, next_actions, rng)
        k_next, k_fit = self.keys(rng)
        u_next = jax.random.uniform(k_next, (b * n,))  # as next_values draws them
        u_cur = jax.random.uniform(k_fit[0], (b * r,))  # as fit draws them
        fields = jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), params["target"]["field"],
                                        params["online"]["field"])
        obs = jnp.stack([repeat_rows(batch["next_observations"], n), repeat_rows(batch["observations"], r)])
        act = jnp.stack([next_actions.reshape(b * n, -1), repeat_rows(batch["actions"], r)])
        z = self.returns_stacked(fields, obs, act, jnp.stack([u_next, u_cur]))  # (2, E, B*R)
        next_values = aggregate(z[0], self.q_agg).reshape(b, n)
        targets = td_targets(batch, self.discount, next_values)
        return self.fit(params, batch, targets, k_fit, current=z[1], u=u_cur)

    def target_update(self, params, tau: float):
        new_target = {"field": polyak(params["online"]["field"], params["target"]["field"], tau)}
        return {"online": params["online"], "target": new_target}

    def param_counts(self, params) -> dict:
        return {"critic/field": count_params(params["online"]["field"]),
                "critic/distill": count_params(params["online"]["distill"])}

    def describe(self) -> dict:
        d = {
            "critic": self.name,
            "critic_flow_steps": self.flow_steps,
            "noise_samples": self.noise_samples,
            "noise_coverage": self.noise_coverage,
            "critic_ensembles": self.num_ensembles,
            "q_agg": self.q_agg,
            "time_embed": self.time_embed,
            "prob_embed": self.prob_embed,
            "train_at_zero_only": self.train_at_zero_only,
            "reward_range_rule": self.reward_range_rule,
        }
        d.update({f"critic_{k}": v for k, v in self.field_net.describe().items()})
        d.update({f"distill_{k}": v for k, v in self.distill_net.describe().items()})
        return d
