"""Forward hooks on real torch models: naming, cloning, tuples, repeats, removal."""

import pytest
import torch
from torch import nn

from models import CategoricalVAE
from probe.hooks import HookError, LayerNotFoundError, Recorder, layer_names, resolve_layers


class InPlaceAfter(nn.Module):
    """A linear layer followed by an in-place ReLU that overwrites its output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        out = self.fc(x)
        out.relu_()
        out.mul_(100)
        return out


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[:, -1])


class SharedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Linear(4, 4)

    def forward(self, x):
        return self.block(torch.relu(self.block(x)))


class Counting(nn.Module):
    """Counts how often its second layer runs, to see the early stop."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        x = self.first(x)
        self.calls += 1
        return self.second(x)


def test_short_names_resolve_to_paths():
    model = CategoricalVAE()

    paths = resolve_layers(model, ["conv1", "conv2", "latent", "encoder.fc"])

    assert paths == {"conv1": "encoder.conv1", "conv2": "encoder.conv2", "latent": "latent", "encoder.fc": "encoder.fc"}


def test_unknown_layer_lists_valid_names():
    model = CategoricalVAE()

    with pytest.raises(LayerNotFoundError) as error:
        resolve_layers(model, ["conv9"])

    message = str(error.value)
    assert "'conv9'" in message
    assert "conv1" in message
    assert "encoder.conv1" in message
    assert "--list-layers" in message


def test_ambiguous_short_name_rejected():
    model = nn.ModuleDict({"left": nn.ModuleDict({"proj": nn.Linear(2, 2)}), "right": nn.ModuleDict({"proj": nn.Linear(2, 2)})})

    with pytest.raises(LayerNotFoundError, match="ambiguous: it matches left.proj, right.proj"):
        resolve_layers(model, ["proj"])


def test_layer_names_include_unique_short_names():
    names = layer_names(CategoricalVAE())

    assert names["conv3"] == "encoder.conv3"
    assert names["encoder.logits"] == "encoder.logits"


def test_recorded_output_survives_inplace_ops():
    torch.manual_seed(0)
    model = InPlaceAfter()
    x = torch.randn(8, 4)
    expected = model.fc(x).detach().clone()

    with Recorder(model, {"fc": "fc"}, stop_early=False) as recorder:
        outputs = recorder.run(x)

    assert torch.equal(outputs["fc"], expected)
    assert (outputs["fc"] < 0).any()


def test_tuple_output_needs_index():
    model = TupleOutput()
    x = torch.randn(2, 6, 3)

    with Recorder(model, {"rnn": "rnn"}) as recorder:
        with pytest.raises(HookError, match="--output-index rnn=I"):
            recorder.run(x)


def test_tuple_output_with_index():
    model = TupleOutput()
    x = torch.randn(2, 6, 3)

    with Recorder(model, {"rnn": "rnn"}, output_index={"rnn": 0}) as recorder:
        outputs = recorder.run(x)

    assert outputs["rnn"].shape == (2, 6, 5)


def test_output_index_out_of_range():
    with Recorder(TupleOutput(), {"rnn": "rnn"}, output_index={"rnn": 5}) as recorder:
        with pytest.raises(HookError, match="out of range"):
            recorder.run(torch.randn(2, 6, 3))


def test_module_called_twice_rejected():
    with Recorder(SharedTwice(), {"block": "block"}) as recorder:
        with pytest.raises(HookError, match="more than once"):
            recorder.run(torch.randn(3, 4))


def test_hooks_removed_after_exception():
    model = SharedTwice()

    with pytest.raises(HookError):
        with Recorder(model, {"block": "block"}) as recorder:
            recorder.run(torch.randn(3, 4))

    assert len(model.block._forward_hooks) == 0
    model(torch.randn(3, 4))


def test_forward_stops_after_last_layer():
    model = Counting()
    x = torch.randn(2, 4)

    with Recorder(model, {"first": "first"}) as recorder:
        recorder.run(x)
        recorder.run(x)
        recorder.run(x)

    # The first pass runs to the end to catch repeated calls; later passes stop early.
    assert model.calls == 1


def test_vae_latent_recorded_as_one_hot():
    model = CategoricalVAE().eval()
    x = torch.rand(4, 1, 28, 28)

    with torch.no_grad(), Recorder(model, resolve_layers(model, ["conv1", "latent"])) as recorder:
        outputs = recorder.run(x)

    assert outputs["conv1"].shape == (4, 8, 14, 14)
    assert outputs["latent"].shape == (4, 3, 26)
    assert torch.equal(outputs["latent"].sum(dim=-1), torch.ones(4, 3))
