"""The generators take model references: ``GraphHyperNetwork.predict`` on an
``nn.Module`` (a tiny HF GPT-2, a nanoGPT-style module), ``hf:DIR`` and
``pkg.mod:factory``; the checkpoint flow on zoo members of a factory
architecture. What cannot work is one line."""

import pytest
import torch
from torch import nn

from tests.model_refs import bad_references, one_error_line, save_tiny_gpt2
from weightspace.arch import ModelRefError
from weightspace.generate import ArchSpec, GraphHyperNetwork, RefArch, as_arch
from weightspace.generate._common import ArchitectureRefError

FACTORY = f"{__name__}:make_mlp"


def make_mlp(width=6):
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3)), torch.randn(2, 4)


@pytest.fixture(scope="module")
def hn():
    return GraphHyperNetwork()


def _loads_and_runs(module, sd, x):
    module.load_state_dict(sd)  # strict: every tensor, right shapes
    with torch.no_grad():
        out = module(x)
    out = out if isinstance(out, torch.Tensor) else out.logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["nanogpt", "gpt2"])
def test_predict_for_a_module(hn, name):
    if name != "nanogpt":
        pytest.importorskip("transformers")
    from tests.hf_models import build

    make, (x,) = build(name)
    m = make(0).eval()
    # the HF model's example input comes from its config; nanoGPT's is given
    sd = hn.predict(m, seed=0, example_input=x) if name == "nanogpt" else hn.predict(m, seed=0)
    _loads_and_runs(make(1).eval(), sd, x)
    assert torch.equal(sd[next(iter(sd))], hn.predict(m, seed=0, example_input=x)[next(iter(sd))])


def test_predict_for_hf_directory_and_factory(hn, tmp_path):
    pytest.importorskip("transformers")
    m = save_tiny_gpt2(tmp_path / "gpt2")
    sd = hn.predict(f"hf:{tmp_path / 'gpt2'}", seed=0)
    _loads_and_runs(m, sd, torch.randint(0, 50, (1, 8)))
    sd = hn.predict(FACTORY, width=9, seed=0)
    _loads_and_runs(make_mlp(9)[0], sd, torch.randn(2, 4))
    assert as_arch(FACTORY, width=9) == as_arch({"factory": FACTORY, "kwargs": {"width": 9}})


def test_as_arch_forms():
    assert isinstance(as_arch("mlp", hidden=[8]), ArchSpec)
    assert isinstance(as_arch({"arch": "mlp"}), ArchSpec)
    a = as_arch(FACTORY)
    assert isinstance(a, RefArch) and a.label == "tests.generate.test_generate_refs:make_mlp" or ":make_mlp" in a.label
    assert a.to_dict() == {"factory": FACTORY, "kwargs": {}}
    assert a.input_shape() == (4,) and a.view(torch.zeros(5, 2, 2)).shape == (5, 4)
    m = nn.Linear(3, 2)
    assert as_arch(m, example_input=torch.randn(1, 3)).to_dict() == {"module": "module:Linear"}


def test_bad_references_are_one_line_errors(hn, tmp_path):
    cases = bad_references(tmp_path, __name__) + [
        (3.5, ArchitectureRefError, "cannot make an architecture from a float"),
        (FACTORY, ModelRefError, "failed with arguments"),  # with depth=2 below: the factory refuses it
    ]
    for ref, exc, says in cases:
        with pytest.raises(exc, match=says) as e:
            hn.predict(ref, seed=0, **({"depth": 2} if ref == FACTORY else {}))
        assert "\n" not in str(e.value) and "Linear(in_features" not in str(e.value)


def test_cli_init_with_references(hn, tmp_path):
    from typer.testing import CliRunner

    from weightspace.cli import app
    from weightspace.io import load_state_dict

    path = hn.save(tmp_path / "hn.safetensors")
    out = tmp_path / "init.safetensors"
    res = CliRunner().invoke(app, ["generate", "init", FACTORY, "-a", "width=5", "--hypernet", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    make_mlp(5)[0].load_state_dict(load_state_dict(out))
    for ref, _, says in bad_references(tmp_path, __name__)[:5] + [(FACTORY, None, "failed with arguments")]:
        extra = ["-a", "depth=2"] if ref == FACTORY else []
        res = CliRunner().invoke(app, ["generate", "init", ref, *extra, "--hypernet", str(path), "-o", str(out)])
        assert res.exit_code == 2 and says in one_error_line(res.output), (ref, res.output)


# ------------------------------------------------------------ checkpoint flow
class _Ck:
    def __init__(self, sd, epoch, acc):
        self._sd, self.epoch, self.metrics = sd, epoch, {"test_acc": acc}

    def state_dict(self):
        return self._sd


class _Member:
    def __init__(self, i, arch, kwargs):
        self.member_id, self.arch, self.model_kwargs = f"m{i}", arch, kwargs
        m, _ = make_mlp(**kwargs)
        torch.manual_seed(i)
        self.checkpoints = [_Ck(make_mlp(**kwargs)[0].state_dict(), e, 0.1 + 0.2 * e + 0.01 * i) for e in range(2)]
        del m


def test_flow_on_members_of_a_factory_architecture(tmp_path):
    from weightspace.generate import CheckpointFlow, collect_checkpoints, generate_checkpoints, train_checkpoint_flow
    from weightspace.generate.checkpoint_flow import MixedArchitecturesError

    members = [_Member(i, FACTORY, {"width": 5}) for i in range(3)]
    cs = collect_checkpoints(members)
    assert isinstance(cs.arch, RefArch) and len(cs) == 6
    model, _ = train_checkpoint_flow(cs, steps=3, batch_size=4, hidden=16, depth=1, bank_size=4, seed=0)
    path = model.save(tmp_path / "flow.safetensors")
    loaded = CheckpointFlow.load(path)
    assert loaded.arch == cs.arch
    sds = generate_checkpoints(path, FACTORY, 2, condition=0.3, seed=0, width=5)
    for sd in sds:
        make_mlp(5)[0].load_state_dict(sd)
    with pytest.raises(ValueError, match="trained on"):
        loaded.generate(FACTORY, 1, condition=0.3, seed=0, width=6)
    with pytest.raises(MixedArchitecturesError, match=r"make_mlp\(width=6\)"):
        collect_checkpoints(members + [_Member(9, FACTORY, {"width": 6})])


def test_flow_trained_on_a_python_module_cannot_be_loaded(tmp_path):
    from weightspace.errors import ConfigError
    from weightspace.generate import CheckpointFlow

    m, x = make_mlp(5)
    flow = CheckpointFlow(as_arch(m, example_input=x), hidden=8, depth=1)
    path = flow.save(tmp_path / "f.safetensors")
    with pytest.raises(ConfigError, match="module given in Python") as e:
        CheckpointFlow.load(path)
    assert e.value.field == "config.arch"
