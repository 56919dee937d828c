"""Balanced mixture bookkeeping: IPF, tau schedule, moving average, balanced sampling."""
import numpy as np
import pytest
import torch

from poolarch.methods import RunInfo
from poolarch.methods.search import MCTSUCB, SPOS, BalancedMixture, BoltzmannExploration
from poolarch.methods.search.mixture import (balance, joint_probabilities, kl_to_uniform, linear_schedule,
                                     moving_average_update, tau_schedule)
from poolarch.models.space import enumerate_configs


def cross_ratios(p):
    """p(c,m) p(c',m') / (p(c,m') p(c',m)) for every pair of rows and columns."""
    c, m = p.shape
    out = []
    for i in range(c):
        for j in range(c):
            for k in range(m):
                for l in range(m):
                    out.append(p[i, k] * p[j, l] / (p[i, l] * p[j, k]))
    return np.array(out)


@pytest.mark.parametrize("shape", [(36, 4), (7, 3), (5, 1), (3, 8)])
def test_ipf_uniform_marginals_and_cross_ratios(shape):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    p = rng.uniform(0.01, 5.0, size=shape) ** 3  # strongly non-uniform positive matrix
    q = balance(p, tol=1e-8)
    assert q.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(q.sum(axis=1), 1 / shape[0], rtol=1e-12)  # rows exact
    np.testing.assert_allclose(q.sum(axis=0), 1 / shape[1], rtol=1e-3)
    assert kl_to_uniform(q.sum(axis=0)) < 1e-8
    np.testing.assert_allclose(cross_ratios(q[:6]), cross_ratios(p[:6]), rtol=1e-9)
    # default tolerance: KL < 1e-4 as in the paper
    assert kl_to_uniform(balance(torch.tensor(p)).sum(axis=0)) < 1e-4


def test_ipf_extreme_temperature_and_bad_input():
    a = np.random.default_rng(0).uniform(0, 1, size=(36, 8))
    q = joint_probabilities(a, tau=1 / 800)  # exp(a / tau) spans e^800: log-domain IPF
    assert np.all(np.isfinite(q)) and kl_to_uniform(q.sum(axis=0)) < 1e-4
    np.testing.assert_allclose(q.sum(axis=1), 1 / 36)
    with pytest.raises(ValueError, match="positive"):
        balance(np.array([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        balance(np.ones(3))
    with pytest.raises(ValueError, match="tau"):
        joint_probabilities(a, tau=0)


def test_kl_to_uniform_closed_form():
    q = np.array([0.5, 0.25, 0.25])
    assert kl_to_uniform(q) == pytest.approx(0.5 * np.log(1.5) + 0.5 * np.log(0.75))


def test_tau_schedule_and_moving_average():
    assert tau_schedule(0.0, 4) == 1.0
    assert tau_schedule(1.0, 4) == pytest.approx(1 / 400)
    assert tau_schedule(0.5, 4) == pytest.approx((1 + 1 / 400) / 2)
    assert tau_schedule(2.0, 1) == pytest.approx(1 / 100)
    assert linear_schedule(1, 3, 0.25) == 1.5
    a = np.zeros((2, 2))
    values = [0.5, 1.0, 0.25]
    for v in values:
        moving_average_update(a, 1, 0, v, beta=0.8)
    expected = 0.0
    for v in values:
        expected = 0.8 * expected + 0.2 * v
    assert a[1, 0] == pytest.approx(expected) and a.sum() == pytest.approx(expected)
    with pytest.raises(ValueError, match="beta"):
        moving_average_update(a, 0, 0, 1.0, beta=1.0)


def test_balanced_mixture_samples_uniformly_and_trains_models_equally():
    """Engine-free: synthetic accuracies strongly favour some (c, m) pairs; c must stay uniform
    and every model must still be trained equally often."""
    configs = enumerate_configs(10, 2)
    M, steps = 4, 20000
    method = BalancedMixture(beta=0.5, seed=1)
    method.bind(configs, M, RunInfo(epochs=1, steps_per_epoch=steps))
    rng = np.random.default_rng(0)
    preference = rng.uniform(0.2, 0.9, size=(len(configs), M))
    preference[:, 0] += 0.3  # model 0 is better for everyone
    for _ in range(steps):
        config, m = method.next_path()
        c = method.last[0]
        method.record(c, m, float(np.clip(preference[c, m] + rng.normal(0, 0.05), 0, 1)))
    per_config = method.visits.sum(axis=1) / steps
    per_model = method.visits.sum(axis=0) / steps
    assert np.all(np.abs(per_config * len(configs) - 1) < 0.15)
    assert np.all(np.abs(per_model * M - 1) < 0.04), per_model
    # at the end (tau small) p(m|c) concentrates: models specialise
    assert method.conditional().max(axis=1).mean() > 0.9
    assert method.tau == pytest.approx(1 / 400)


def test_sampler_state_roundtrip():
    configs = enumerate_configs(6, 2)
    for cls, kwargs in [(BalancedMixture, {}), (SPOS, {}), (MCTSUCB, {"warmup": 0.1}),
                        (BoltzmannExploration, {"warmup": 0.1})]:
        a = cls(seed=3, **kwargs)
        a.bind(configs, 2 if cls is BalancedMixture else 1, RunInfo(epochs=4, steps_per_epoch=25))
        for i in range(30):
            c = a.next_path()
            a.record(a.last[0], a.last[1], (i % 7) / 7)
        b = cls(seed=99, **kwargs)
        b.load_state_dict(a.state_dict())
        b.bind(configs, 2 if cls is BalancedMixture else 1, RunInfo(epochs=4, steps_per_epoch=25))
        assert [a.next_path() for _ in range(20)] == [b.next_path() for _ in range(20)], cls


def test_mcts_tree_leaves_are_the_space_and_ucb_explores_all():
    configs = enumerate_configs(10, 2)
    method = MCTSUCB(seed=0, ucb_c=0.5)
    method.bind(configs, 1, RunInfo(epochs=1, steps_per_epoch=1000))
    leaves, stack = [], [(0,)]
    while stack:
        node = stack.pop()
        if len(node) == 10:
            leaves.append(node)
        else:
            stack.extend(method.children(node))
    assert len(leaves) == 36
    assert sorted(tuple(leaf.count(k) for k in range(3)) for leaf in leaves) == configs
    target = configs.index((7, 1, 2))
    for _ in range(1000):
        method.next_path()
        c = method.last[0]
        method.record(c, 0, 1.0 if c == target else 0.3)
    assert method.visits.sum() == 1000
    for child in method.children((0,)):  # UCB tries every child of a visited node
        assert method.count[child] > 0
    assert method.count[(0,)] == 1000
    assert method.visits[target, 0] == method.visits.max()  # exploitation of the best leaf
    assert method.greedy_config() == (7, 1, 2)


def test_bse_schedule_and_warmup():
    configs = enumerate_configs(6, 1)
    method = BoltzmannExploration(inv_temp_end=50, warmup=0.5, seed=0)
    method.bind(configs, 1, RunInfo(epochs=1, steps_per_epoch=100))
    method.accuracy[:, 0] = np.linspace(0, 1, len(configs))
    np.testing.assert_allclose(method.probabilities(), 1 / len(configs))  # warm-up: uniform
    method.step = 100
    logits = 50 * method.accuracy[:, 0]
    np.testing.assert_allclose(method.probabilities(), np.exp(logits) / np.exp(logits).sum())


def test_warm_started_ipf_reaches_the_same_balanced_matrix():
    from poolarch.methods.search.mixture import ipf_log

    rng = np.random.default_rng(5)
    a = rng.uniform(0.5, 0.95, size=(36, 4))
    _, offsets = ipf_log(a / 0.01, tol=1e-10)
    a2 = a.copy()
    a2[3, 1] += 0.02
    cold, _ = ipf_log(a2 / 0.0099, tol=1e-10)
    warm, _ = ipf_log(a2 / 0.0099, tol=1e-10, column_offsets=offsets)
    np.testing.assert_allclose(warm, cold, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(cross_ratios(warm[:5]), cross_ratios(np.exp(a2[:5] / 0.0099 - 50)), rtol=1e-8)
