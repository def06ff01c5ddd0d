"""Schedules against the tutorial's formulas and transformers' own linear schedule."""

import math

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from sftlib import schedules
from sftlib.config import RunConfig

ETA0, ETAF, T = 1e-3, 1e-5, 100


@pytest.mark.parametrize("t", [0, 1, 25, 50, 99, 100])
def test_formulas_without_warmup(t):
    kw = {"lr": ETA0, "total_steps": T, "final_lr": ETAF}
    assert schedules.lr_at(t, schedule="linear", **kw) == pytest.approx(
        ETA0 - (t / T) * (ETA0 - ETAF))
    assert schedules.lr_at(t, schedule="cosine", **kw) == pytest.approx(
        ETAF + 0.5 * (ETA0 - ETAF) * (1 + math.cos(t * math.pi / T)))
    assert schedules.lr_at(t, schedule="exponential", gamma=0.97, **kw) == pytest.approx(
        ETA0 * 0.97**t)
    assert schedules.lr_at(t, schedule="constant", **kw) == ETA0


def test_exponential_gamma_derived_from_final_lr():
    gamma = schedules.derive_gamma(ETA0, ETAF, T)
    assert gamma == pytest.approx((ETAF / ETA0) ** (1 / T))
    assert schedules.lr_at(T, schedule="exponential", lr=ETA0, total_steps=T,
                           final_lr=ETAF) == pytest.approx(ETAF)


def test_warmup_is_linear_from_zero_then_formula_on_the_rest():
    kw = {"lr": ETA0, "total_steps": 110, "warmup_steps": 10, "final_lr": 0.0}
    assert schedules.lr_at(0, schedule="cosine", **kw) == 0.0
    assert schedules.lr_at(5, schedule="cosine", **kw) == pytest.approx(ETA0 / 2)
    assert schedules.lr_at(10, schedule="cosine", **kw) == pytest.approx(ETA0)
    assert schedules.lr_at(60, schedule="cosine", **kw) == pytest.approx(ETA0 / 2)
    assert schedules.lr_at(110, schedule="linear", **kw) == pytest.approx(0.0)


@pytest.mark.parametrize("warmup_ratio", [0.0, 0.1])
def test_linear_matches_transformers(warmup_ratio):
    cfg = RunConfig(lr=ETA0, schedule="linear", warmup_ratio=warmup_ratio, final_lr=0.0)
    total = 50
    ours_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=ETA0)
    hf_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=ETA0)
    ours = schedules.make_scheduler(ours_opt, cfg, total)
    hf = get_linear_schedule_with_warmup(
        hf_opt, schedules.warmup_steps_for(total, warmup_ratio), total)
    for _ in range(total):
        assert ours.get_last_lr()[0] == pytest.approx(hf.get_last_lr()[0], abs=1e-12)
        ours_opt.step(), hf_opt.step(), ours.step(), hf.step()


def test_torch_scheduler_follows_the_pure_function():
    cfg = RunConfig(lr=ETA0, schedule="exponential", final_lr=ETAF, warmup_ratio=0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=ETA0)
    scheduler = schedules.make_scheduler(opt, cfg, T)
    kwargs = schedules.schedule_kwargs(cfg, T)
    for step in range(T):
        assert scheduler.get_last_lr()[0] == pytest.approx(
            schedules.lr_at(step, schedule="exponential", **kwargs))
        opt.step()
        scheduler.step()


def test_hf_named_schedule_and_curve():
    cfg = RunConfig(schedule="hf:cosine", warmup_ratio=0.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    assert schedules.make_scheduler(opt, cfg, 10).get_last_lr()[0] == pytest.approx(cfg.lr)
    curve = schedules.schedule_curve(RunConfig(), 20, schedules.OWN_SCHEDULES)
    assert list(curve.columns) == list(schedules.OWN_SCHEDULES) and len(curve) == 20
