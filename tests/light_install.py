"""The light install works: `pip install qsgd` (torch and numpy, no extra) trains every variant.

Run by ``nox -s light`` (and so by CI) in a bare virtual environment that holds only what
``pip install qsgd`` brings: it checks that no optional package is importable, trains a small
regression model with every variant id that needs no optional package (all of them: ``circuit``
runs on the torch statevector simulator), imports the other torch-only parts of qsgd (models,
attention, circuit), and checks that the Qiskit cross-check says what to install. Not a pytest
file (pytest is not part of the light install); exits non-zero on the first failure.
"""

from __future__ import annotations

import importlib.util
import sys
import time

OPTIONAL = ("scipy", "statsmodels", "pandas", "matplotlib", "seaborn", "tqdm", "qiskit",
            "qiskit_aer", "transformers", "accelerate", "gguf", "dask", "lightning", "pytest")


def _train(variant_id: str) -> tuple[float, float]:
    import torch

    import qsgd

    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(128, 1, generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = qsgd.SuperpositionalAdamW(model.parameters(), lr=1e-2, seed=1,
                                    **qsgd.parse_variant(variant_id).optimizer_kwargs())
    loss_fn = torch.nn.MSELoss()
    with torch.no_grad():
        first = float(loss_fn(model(x), y))
    for _ in range(60):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        return first, float(loss_fn(model(x), y))


def _expect_install_hint(fn, what: str) -> None:
    try:
        fn()
    except ImportError as err:
        if "pip install 'qsgd[quantum]'" not in str(err):
            raise AssertionError(f"{what}: the ImportError does not say what to install: "
                                 f"{err}") from err
        print(f"  {what}: {err}")
        return
    raise AssertionError(f"{what} ran without Qiskit installed")


def main() -> int:
    start = time.perf_counter()
    present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
    if present:
        raise AssertionError(f"not a light install: {', '.join(present)} importable")
    import torch

    import qsgd
    import qsgd.attention  # noqa: F401 - torch-only parts import without extras
    import qsgd.circuit
    import qsgd.models  # noqa: F401
    from qsgd.perturbations import Circuit, available

    heavy = sorted(set(sys.modules) & {"scipy", "pandas", "matplotlib", "qiskit", "transformers"})
    if heavy:
        raise AssertionError(f"import qsgd pulled in {heavy}")
    print(f"qsgd {qsgd.__version__} from {qsgd.__file__.rsplit('qsgd', 1)[0]}, torch "
          f"{torch.__version__}, no optional package")
    ids = ["adamw", "anneal", "sin-l0.5-first4"] + [
        f"{n}-l0.5" for n in available() if n not in ("none", "anneal")]
    for vid in ids:
        first, last = _train(vid)
        if not last < 0.5 * first:
            raise AssertionError(f"{vid}: loss {first:.4f} -> {last:.4f} did not halve")
        print(f"  {vid:16s} loss {first:.4f} -> {last:.4f}")
    _expect_install_hint(lambda: qsgd.circuit.to_qiskit([0.1, 0.2]), "to_qiskit")
    aer = Circuit(backend="aer")
    _expect_install_hint(lambda: aer.readout(torch.zeros(4), 4), "circuit backend='aer'")
    print(f"light install: {len(ids)} variants trained, Qiskit hints checked, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
