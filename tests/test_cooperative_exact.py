"""Cooperative learning, exactly: with linear branches and no penalty, minimising the library's own
cooperative loss gives the least-squares solution on the augmented data

    [[X, Z], [-sqrt(rho) X, sqrt(rho) Z]]  with targets  [y; 0]

(Ding, Li, Narasimhan, Tibshirani, PNAS 2022).  The loss is quadratic in the branch coefficients, so
one Newton step from zero, with the gradient and Hessian of *our* loss, is its exact minimiser; an
LBFGS run on the module's parameters checks the same with a real optimiser.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from cardiofusion.models import create_fusion

N, DX, DZ = 60, 4, 3


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DX, generator=g, dtype=torch.float64)
    z = torch.randn(N, DZ, generator=g, dtype=torch.float64) + 0.5 * x[:, :DZ]  # correlated views
    logits = x[:, 0] - z[:, 1] + 0.3 * torch.randn(N, generator=g, dtype=torch.float64)
    y = (logits > 0).to(torch.float64)
    return x, z, y


def _augmented_lstsq(x, z, y, rho, intercept: bool, weights=None):
    if intercept:  # each branch's bias is a column of ones in its view
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        z = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
    r = math.sqrt(rho)
    a = torch.cat([torch.cat([x, z], 1), torch.cat([-r * x, r * z], 1)], 0)  # (2N, dx + dz)
    b = torch.cat([y, torch.zeros_like(y)])
    if weights is not None:  # weighted least squares: scale rows by sqrt(w)
        s = torch.cat([weights, weights]).sqrt()
        a, b = a * s[:, None], b * s
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def _newton_solution(head, x, z, y, intercept: bool, pos_weight=None):
    """Exact minimiser of head.loss over the branch coefficients (biases fixed at 0 unless intercept)."""
    names = ["ecg_head.weight", "cxr_head.weight"] + (["ecg_head.bias", "cxr_head.bias"] if intercept else [])
    shapes = {n: p.shape for n, p in head.named_parameters()}
    sizes = [shapes[n].numel() for n in names]

    def loss_of(theta):
        params = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        for n, chunk in zip(names, torch.split(theta, sizes)):
            params[n] = chunk.reshape(shapes[n])
        out = functional_call(head, params, ({"ecg": x, "cxr": z},))
        return head.loss(out, y, pos_weight=pos_weight)["loss"]

    theta0 = torch.zeros(sum(sizes), dtype=torch.float64)
    grad = torch.func.grad(loss_of)(theta0)
    hess = torch.func.jacrev(torch.func.jacrev(loss_of))(theta0)  # reverse-over-reverse
    theta = theta0 - torch.linalg.solve(hess, grad)
    parts = dict(zip(names, torch.split(theta, sizes)))
    coef = [parts["ecg_head.weight"]] + ([parts["ecg_head.bias"]] if intercept else [])
    coef += [parts["cxr_head.weight"]] + ([parts["cxr_head.bias"]] if intercept else [])
    return torch.cat(coef)


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0, 3.0])
def test_cooperative_equals_augmented_least_squares(rho):
    x, z, y = _data()
    head = create_fusion("cooperative", DX, DZ, rho=rho).double()
    got = _newton_solution(head, x, z, y, intercept=False)
    torch.testing.assert_close(got, _augmented_lstsq(x, z, y, rho, intercept=False), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rho", [0.3, 1.0, 3.0])
def test_cooperative_with_intercepts(rho):
    """With rho > 0 the two biases are identifiable (their sum fits y, their difference is shrunk)."""
    x, z, y = _data(1)
    head = create_fusion("cooperative", DX, DZ, rho=rho).double()
    got = _newton_solution(head, x, z, y, intercept=True)
    torch.testing.assert_close(got, _augmented_lstsq(x, z, y, rho, intercept=True), rtol=1e-9, atol=1e-9)


def test_cooperative_pos_weight_is_weighted_least_squares():
    x, z, y = _data(2)
    head = create_fusion("cooperative", DX, DZ, rho=0.5).double()
    got = _newton_solution(head, x, z, y, intercept=False, pos_weight=4.0)
    w = torch.where(y > 0.5, 4.0, 1.0).to(torch.float64)
    torch.testing.assert_close(got, _augmented_lstsq(x, z, y, 0.5, intercept=False, weights=w), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_cooperative_lbfgs_on_module(rho):
    """A real full-batch optimiser on the module's own parameters reaches the same solution."""
    torch.manual_seed(0)
    x, z, y = _data(3)
    head = create_fusion("cooperative", DX, DZ, rho=rho).double()
    with torch.no_grad():
        head.ecg_head.bias.zero_()
        head.cxr_head.bias.zero_()
    head.ecg_head.bias.requires_grad_(False)
    head.cxr_head.bias.requires_grad_(False)
    params = [head.ecg_head.weight, head.cxr_head.weight]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = head.loss(head({"ecg": x, "cxr": z}), y)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    got = torch.cat([head.ecg_head.weight.detach().ravel(), head.cxr_head.weight.detach().ravel()])
    torch.testing.assert_close(got, _augmented_lstsq(x, z, y, rho, intercept=False), rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------- k outputs (tasks beyond binary)

K = 3


def _targets(kind: str, seed: int = 4):
    """Encoded (N, K) targets: one-hot (softmax), multi-hot with unknown entries (logistic), values (identity)."""
    g = torch.Generator().manual_seed(seed)
    x, z, _ = _data(seed)
    if kind == "softmax":
        cls = torch.argmax(x[:, :K] + z[:, :K] + 0.5 * torch.randn(N, K, generator=g, dtype=torch.float64), 1)
        return x, z, torch.nn.functional.one_hot(cls, K).to(torch.float64), "softmax"
    if kind == "logistic":
        y = ((x[:, :K] - z[:, :K] + 0.3 * torch.randn(N, K, generator=g, dtype=torch.float64)) > 0).to(torch.float64)
        y[torch.rand(N, K, generator=g, dtype=torch.float64) < 0.2] = float("nan")  # unknown labels
        return x, z, y, "logistic"
    y = x[:, :K] @ torch.randn(K, K, generator=g, dtype=torch.float64) + z[:, :K]
    return x, z, y + 0.1 * torch.randn(N, K, generator=g, dtype=torch.float64), "identity"


@pytest.mark.parametrize("kind", ["softmax", "logistic", "identity"])
@pytest.mark.parametrize("rho", [0.0, 0.7, 2.0])
def test_cooperative_k_outputs_equal_augmented_least_squares_per_output(kind, rho):
    """Each output j of the k-output cooperative minimiser is least squares on the augmented data for target j
    (rows whose target j is unknown left out)."""
    x, z, y, link = _targets(kind)
    head = create_fusion("cooperative", DX, DZ, rho=rho, num_outputs=K, link=link).double()
    names = ["ecg_head.weight", "cxr_head.weight"]
    shapes = {n: p.shape for n, p in head.named_parameters()}
    sizes = [shapes[n].numel() for n in names]

    def loss_of(theta):
        params = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        for n, chunk in zip(names, torch.split(theta, sizes)):
            params[n] = chunk.reshape(shapes[n])
        return head.loss(functional_call(head, params, ({"ecg": x, "cxr": z},)), y)["loss"]

    theta0 = torch.zeros(sum(sizes), dtype=torch.float64)
    grad = torch.func.grad(loss_of)(theta0)
    hess = torch.func.jacrev(torch.func.jacrev(loss_of))(theta0)
    w_e, w_c = torch.split(theta0 - torch.linalg.solve(hess, grad), sizes)
    w_e, w_c = w_e.reshape(K, DX), w_c.reshape(K, DZ)
    for j in range(K):
        known = ~torch.isnan(y[:, j])
        want = _augmented_lstsq(x[known], z[known], y[known, j], rho, intercept=False)
        torch.testing.assert_close(torch.cat([w_e[j], w_c[j]]), want, rtol=1e-9, atol=1e-9)
