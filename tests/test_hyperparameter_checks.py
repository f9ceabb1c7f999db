"""Hyperparameters refused before anything is built: infinite values, negative coefficients of
the new algorithms, two algorithm files or two recipes in one run, ReBRAC without a recipe."""

from __future__ import annotations

import pytest

from floq.config import ConfigError
from floq.train import build

SMOKE = "gin/experiments/smoke.gin"


@pytest.mark.parametrize("files, binding, message", [
    ([SMOKE, "gin/algorithms/sac.gin"], "SAC.init_alpha=1e999", "SAC.init_alpha must be a finite number, got inf"),
    ([SMOKE], "FQL.lr=1e999", "FQL.lr must be a finite number, got inf"),
    ([SMOKE], "FQL.alpha=-1e999", "FQL.alpha must be a finite number, got -inf"),
    ([SMOKE, "gin/algorithms/rebrac.gin"], "REBRAC_ALPHA_ACTOR=-1.0", "ReBRAC.alpha_actor must be >= 0, got -1.0"),
    ([SMOKE, "gin/algorithms/rebrac.gin"], "REBRAC_ALPHA_CRITIC=-0.5", "ReBRAC.alpha_critic must be >= 0, got -0.5"),
    ([SMOKE, "gin/algorithms/iql.gin"], "IQL_ALPHA=-3.0", "IQL.alpha must be >= 0, got -3.0"),
    ([SMOKE, "gin/algorithms/iql.gin"], "IQL.adv_clip=0.0", "IQL.adv_clip must be > 0, got 0.0"),
    ([SMOKE, "gin/algorithms/iql.gin"], "IQL_ALPHA=1e999", "IQL.alpha must be a finite number, got inf"),
])
def test_bad_values_are_one_line(files, binding, message):
    with pytest.raises(ConfigError) as e:
        build(files, [binding])
    assert str(e.value) == message


def test_good_values_still_build():
    build([SMOKE, "gin/algorithms/rebrac.gin"], ["REBRAC_ALPHA_ACTOR=0.0"])
    build([SMOKE, "gin/algorithms/iql.gin"], ["IQL_ALPHA=0.5"])


def test_two_algorithm_files_are_refused():
    with pytest.raises(ConfigError, match=r"^two algorithms given: gin/algorithms/iql.gin, gin/algorithms/rebrac.gin"):
        build([SMOKE, "gin/algorithms/iql.gin", "gin/algorithms/rebrac.gin"])
    build([SMOKE, "gin/algorithms/iql.gin"])  # the documented swap: an experiment, then one algorithm


def test_two_recipes_are_refused():
    with pytest.raises(ConfigError, match=r"^two recipes given: gin/recipes/floq_paper.gin, gin/recipes/fql_paper.gin"):
        build([SMOKE, "gin/recipes/floq_paper.gin", "gin/recipes/fql_paper.gin"])
    build([SMOKE, "gin/recipes/released_budget.gin"])  # a budget recipe beside one of tuned values


@pytest.mark.parametrize("files", [["gin/algorithms/rebrac.gin"], ["NORECIPE", "gin/algorithms/rebrac.gin"]])
def test_rebrac_without_a_recipe_says_no_recipe(files, tmp_path):
    f = tmp_path / "norecipe.gin"
    f.write_text("include 'gin/algorithms/fql.gin'\ninclude 'gin/critics/monolithic.gin'\n"
                 "include 'gin/tasks/cube-single-play.gin'\n")
    files = [str(f) if x == "NORECIPE" else x for x in files]
    with pytest.raises(ConfigError) as e:
        build(files)
    assert str(e.value).startswith("no recipe: REBRAC_ALPHA_ACTOR is undefined")
    assert "undefined macro" not in str(e.value)
