"""Conditional VAEs, M2 with missing labels, missing continuous covariates, and the objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

import vaelab
from vaelab.evaluation import quality as q
from vaelab.cli import main
from vaelab.config import ModelConfig, TrainConfig
from vaelab.data.datasets import load_dataset
from vaelab.models.vae import VAE
from vaelab.bounds.objectives import Objective, objective_sums
from vaelab.bounds.missing import covariate_sums, label_sums, unlabelled_terms, weighted_elbo
from vaelab.training.epoch import objective_schedule

from .conftest import tiny_settings

CLASSES = tuple(str(k) for k in range(4))


def _label_model(infer: bool = True) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3, condition="label", class_names=CLASSES,
                           infer_missing=infer, input_shape=(1, 4, 4)))


def _binary(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full(shape, 0.4), generator=torch.Generator().manual_seed(seed))


# --- objectives --------------------------------------------------------------------------------

def _plain_model() -> VAE:
    torch.manual_seed(1)
    return VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3, input_shape=(1, 4, 4)))


def test_beta_one_is_the_elbo_and_beta_scales_only_the_kl():
    model, x = _plain_model(), _binary((5, 1, 4, 4))
    eps = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(2))
    plain = objective_sums(model, x, None, eps, Objective("elbo"))
    beta_one = objective_sums(model, x, None, eps, Objective("beta", kl_weight=1.0))
    beta_three = objective_sums(model, x, None, eps, Objective("beta", kl_weight=3.0))
    torch.testing.assert_close(beta_one.objective, plain.objective)
    torch.testing.assert_close(beta_three.objective, plain.rec + 3 * plain.kl)


def test_iwae_with_one_sample_is_the_elbo_with_a_sampled_kl():
    """-IW_1 = -log p(x|z) - log p(z) + log q(z|x) exactly, for the same z; torch.distributions as reference."""
    model, x = _plain_model(), _binary((6, 1, 4, 4))
    eps = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(3))
    sums = objective_sums(model, x, None, eps, Objective("iwae", samples=1))
    qz = model.encode(x)
    z = qz.mean + qz.stddev * eps[0]
    reference = -(model.decode(z).log_prob(x) + model.prior.log_prob(z) - qz.log_prob(z))
    torch.testing.assert_close(sums.objective, reference.sum())


def test_iwae_with_one_sample_equals_the_analytic_elbo_in_expectation():
    model, x = _plain_model(), _binary((4, 1, 4, 4))
    draws = 20000
    eps = torch.randn(1, 4 * draws, 3, generator=torch.Generator().manual_seed(4))
    repeated = x.repeat(draws, 1, 1, 1)
    with torch.no_grad():
        iw1 = objective_sums(model, repeated, None, eps, Objective("iwae", samples=1)).objective / draws
        analytic = objective_sums(model, repeated, None, eps, Objective("elbo")).objective / draws
    assert abs(iw1.item() - analytic.item()) < 0.05 * 4


@settings(max_examples=15, deadline=None)
@given(k=st.integers(2, 8), seed=st.integers(0, 1000))
def test_iwae_bound_is_never_looser_than_the_mean_of_its_weights(k, seed):
    """log mean exp >= mean (Jensen), for every draw: -IW_K <= the K-sample ELBO with sampled KL."""
    model, x = _plain_model(), _binary((3, 1, 4, 4), seed)
    eps = torch.randn(k, 3, 3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        iw = objective_sums(model, x, None, eps, Objective("iwae", samples=k)).objective
        qz = model.encode(x)
        z = qz.mean + qz.stddev * eps
        log_w = model.decode(z).log_prob(x) + model.prior.log_prob(z) - qz.log_prob(z)
    assert iw.item() <= -log_w.mean(0).sum().item() + 1e-4


def test_free_bits_floor_each_dimensions_batch_mean_kl():
    model, x = _plain_model(), _binary((5, 1, 4, 4))
    eps = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(5))
    plain = objective_sums(model, x, None, eps, Objective("elbo"))
    floored = objective_sums(model, x, None, eps, Objective("elbo", free_bits=100.0))
    torch.testing.assert_close(floored.objective, plain.rec + 100.0 * 3 * 5)  # every dimension below the floor
    torch.testing.assert_close(floored.kl, plain.kl)  # the reported KL is the real one


def test_kl_warm_up_is_linear_then_constant():
    at = objective_schedule(TrainConfig(objective="beta", beta=2.0, warmup_epochs=4))
    assert [at(e).kl_weight for e in (0, 1, 2, 4, 9)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert objective_schedule(TrainConfig(objective="iwae", iwae_samples=7))(0).samples == 7


def test_warm_up_and_free_bits_are_refused_with_iwae():
    with pytest.raises(vaelab.VaelabError, match="objective"):
        TrainConfig(objective="iwae", free_bits=0.5)
    with pytest.raises(vaelab.VaelabError, match="beta"):
        TrainConfig(objective="elbo", beta=4.0)


# --- M2 ------------------------------------------------------------------------------------------

def test_m2_unlabelled_bound_equals_the_brute_force_sum_over_classes():
    model, x = _label_model(), _binary((5, 1, 4, 4))
    eps = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(6))
    negative_u, rec, kl = unlabelled_terms(model, x, eps)
    q_y = torch.softmax(model.classify(x).logits, -1)  # [B, Y]
    brute, brute_rec, brute_kl = torch.zeros(5), torch.zeros(5), torch.zeros(5)
    for y in range(len(CLASSES)):
        loss_y, rec_y, kl_y = weighted_elbo(model, x, torch.full((5,), y), eps)  # one class at a time, as labels
        brute += q_y[:, y] * (loss_y + math.log(len(CLASSES)))
        brute_rec += q_y[:, y] * rec_y
        brute_kl += q_y[:, y] * kl_y
    brute -= -(q_y * q_y.log()).sum(-1)  # minus the entropy of q(y|x)
    torch.testing.assert_close(negative_u, brute)
    torch.testing.assert_close(rec, brute_rec)
    torch.testing.assert_close(kl, brute_kl)


def test_m2_with_every_label_observed_is_a_plain_cvae_plus_the_classifier_loss():
    model, x = _label_model(), _binary((6, 1, 4, 4))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    eps = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(7))
    m2 = label_sums(model, x, y, eps, Objective(), label_weight=0.0)
    cvae = objective_sums(model, x, y, eps, Objective())
    torch.testing.assert_close(m2.objective, cvae.objective + 6 * math.log(len(CLASSES)))  # -log p(y) is a constant
    with_classifier = label_sums(model, x, y, eps, Objective(), label_weight=2.5)
    cross_entropy = torch.nn.functional.cross_entropy(model.classify(x).logits, y, reduction="sum")
    torch.testing.assert_close(with_classifier.objective, m2.objective + 2.5 * cross_entropy)


def test_m2_labelled_batch_rows_add_only_the_classification_term():
    """The trainer's extra labelled rows classify; the bound counts the ordinary rows alone."""
    model, x = _label_model(), _binary((7, 1, 4, 4))
    y = torch.tensor([0, -1, 2, -1, 1, 3, 2])
    classify_only = torch.tensor([False, False, False, False, False, True, True])
    eps = torch.randn(1, 7, 3, generator=torch.Generator().manual_seed(8))
    sums = label_sums(model, x, y, eps, Objective(), label_weight=4.0, classify_only=classify_only)
    bound = label_sums(model, x[:5], y[:5], eps[:, :5], Objective(), label_weight=0.0)
    cross_entropy = torch.nn.functional.cross_entropy(model.classify(x[5:]).logits, y[5:], reduction="sum")
    torch.testing.assert_close(sums.objective, bound.objective + 4.0 * cross_entropy)
    torch.testing.assert_close(sums.rec, bound.rec)
    torch.testing.assert_close(sums.kl, bound.kl)


def test_shared_classifier_reads_the_encoders_hidden_layers_and_y_joins_after_them():
    model, x = _label_model(), _binary((5, 1, 4, 4))
    first = model.encoder_net.features[1][0][0]  # Flatten, then the hidden Linear + ReLU
    hidden = torch.relu(first(x.flatten(1)))
    # Categorical normalises its logits: q(y|x) is the softmax of the head on the hidden layers.
    torch.testing.assert_close(model.classify(x).logits, torch.log_softmax(model.label_head(hidden), -1))
    y = model.condition_vector(torch.tensor([0, 1, 2, 3, 0]))
    torch.testing.assert_close(model.encoder_net(x, y), model.encoder_net.head(torch.cat((hidden, y), -1)))
    # The bound of unlabelled examples trains the layers q(y|x) reads.
    negative_u, _, _ = unlabelled_terms(model, x, torch.randn(1, 5, 3))
    assert torch.autograd.grad(negative_u.sum(), first.weight)[0].abs().sum() > 0


def test_config_written_before_the_classifier_setting_keeps_its_own_network():
    model = {"condition": "label", "class_names": list(CLASSES), "infer_missing": True, "input_shape": [1, 4, 4]}
    assert vaelab.RunConfig.from_dict({"model": model}).model.classifier == "separate"
    assert vaelab.RunConfig.from_dict({"model": {**model, "classifier": "shared"}}).model.classifier == "shared"
    assert vaelab.RunConfig.from_dict({"model": {**model, "infer_missing": False}}).model.classifier == "shared"


@pytest.mark.parametrize("classifier, module", [("shared", "label_head"), ("separate", "label_net")])
def test_training_with_all_labels_builds_no_classifier_and_hiding_builds_one(tmp_path, classifier, module):
    plain = vaelab.train(out=tmp_path / "cvae", progress=False, **tiny_settings(epochs=1, condition="label"))
    assert plain.config.model.infer_missing is False
    assert not hasattr(plain.model, "label_net") and not hasattr(plain.model, "label_head")
    m2 = vaelab.train(out=tmp_path / "m2", progress=False,
                      **tiny_settings(epochs=1, condition="label", labelled=50, classifier=classifier))
    assert m2.config.model.infer_missing is True and hasattr(m2.model, module)
    loaded = vaelab.load(tmp_path / "m2")
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded.model.classify(x).logits, m2.model.classify(x).logits)


def test_labelled_keeps_a_class_balanced_subset(tmp_path):
    from vaelab.data.pipeline import load_data

    run_config = vaelab.RunConfig().with_overrides(**{**tiny_settings(), "condition": "label", "labelled": 30})
    y = load_data(run_config).train.y
    kept = y[y >= 0]
    assert kept.numel() == 30 and torch.bincount(kept, minlength=10).tolist() == [3] * 10


@pytest.fixture(scope="module")
def digits_classifier():
    return q.train_classifier(load_dataset("digits"), seed=0, epochs=30, progress=False)


def test_conditional_samples_are_classified_as_their_label(tmp_path_factory, digits_classifier):
    run = vaelab.train(out=tmp_path_factory.mktemp("runs") / "cvae", progress=False,
                       **tiny_settings(epochs=40, hidden=(128,), latent_dim=4, condition="label", lr=3e-3))
    labels = torch.arange(10).repeat_interleave(30)
    samples = run.model.sample(300, generator=torch.Generator().manual_seed(0), c=labels).clamp(0, 1)
    predicted = digits_classifier(samples).argmax(-1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.6, f"conditional samples classified as their label {accuracy:.0%} of the time (chance: 10%)"


# --- missing continuous covariates ------------------------------------------------------------

def _covariate_model() -> VAE:
    torch.manual_seed(2)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3, condition="covariates", covariate_names=("a", "b"),
                            infer_missing=True, input_shape=(1, 4, 4)))
    model.covariate_mean.copy_(torch.tensor([1.0, -2.0]))
    model.covariate_std.copy_(torch.tensor([2.0, 0.5]))
    return model


def test_covariate_bound_without_missing_values_is_the_cvae_elbo():
    model, x = _covariate_model(), _binary((4, 1, 4, 4))
    c = torch.randn(4, 2)
    eps = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(8))
    sums = covariate_sums(model, x, c, eps, Objective())
    cvae = objective_sums(model, x, c, eps[..., :3], Objective())
    torch.testing.assert_close(sums.objective, cvae.objective)


def test_covariate_bound_adds_the_kl_of_each_missing_entry_against_the_standard_normal():
    model, x = _covariate_model(), _binary((4, 1, 4, 4))
    c = torch.randn(4, 2)
    c[1, 0] = c[3, 1] = float("nan")
    eps = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(9))
    sums = covariate_sums(model, x, c, eps, Objective())
    qc = model.covariate_posterior(x, c)
    # q(c_m|x, c_o) is in standard units: a drawn entry is mean + std * (loc + scale * eps) in the data's units.
    drawn = model.covariate_mean + model.covariate_std * (qc.loc + qc.scale * eps[0, :, 3:])
    completed = torch.where(torch.isnan(c), drawn, c)
    loss, _, _ = weighted_elbo(model, x, completed, eps[..., :3])
    kl = torch.distributions.kl_divergence(qc, Normal(torch.zeros(4, 2), torch.ones(4, 2)))
    torch.testing.assert_close(sums.objective, loss.sum() + kl[1, 0] + kl[3, 1])


def _brightness_npz(path, n: int = 600) -> None:
    """Digits-like images whose covariate (mean brightness) is truly predictive from x."""
    digits = load_dataset("digits")
    x = torch.cat([digits.train.x, digits.val.x, digits.test.x])[:n]
    brightness = x.mean(dim=(1, 2, 3))
    width = (x.amax(dim=2) > 0.3).float().sum(dim=(1, 2))
    np.savez(path, x=x.numpy(), c=torch.stack((brightness, width), 1).numpy(), c_names=np.array(["brightness", "width"]))


def test_imputation_of_a_predictive_covariate_beats_the_mean(tmp_path):
    _brightness_npz(tmp_path / "bright.npz")
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(
        dataset=str(tmp_path / "bright.npz"), condition="covariates", missing_frac=0.5, epochs=30, hidden=(64,),
        lr=3e-3, likelihood="cbernoulli", alpha=1.0))
    assert run.config.model.covariate_names == ("brightness", "width")
    from vaelab.evaluation.imputation import impute_run

    report = impute_run(run.path, "test", device="cpu")
    for name, figures in report["covariates"].items():
        assert figures["rmse"] < 0.8 * figures["baseline_rmse"], (name, figures)
    assert (run.path / "imputation-test.json").is_file()


# --- data ------------------------------------------------------------------------------------

def test_npz_covariates_and_numeric_class_folders_are_read(tmp_path):
    from PIL import Image

    np.savez(tmp_path / "c.npz", x=np.random.rand(10, 4).astype(np.float32), c=np.arange(10.0))
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert ds.covariate_names == ("c0",) and ds.train.c.shape == (8, 1)
    for angle in ("angle=0,scale=1", "angle=30,scale=2"):
        (tmp_path / "f" / angle).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4), color=i * 40).save(tmp_path / "f" / angle / f"{i}.png")
    ds = load_dataset(str(tmp_path / "f"))
    assert ds.covariate_names == ("angle", "scale")
    all_c = torch.cat([ds.train.c, ds.val.c, ds.test.c])
    assert sorted(map(tuple, all_c.tolist())) == [(0.0, 1.0)] * 3 + [(30.0, 2.0)] * 3


def test_bad_covariate_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 3), np.float32), c=np.array([1.0, np.inf, 0, 0, 0]))
    with pytest.raises(vaelab.VaelabError, match="infinite"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "names.npz", x=np.zeros((5, 3), np.float32), c=np.zeros((5, 2)), c_names=np.array(["a"]))
    with pytest.raises(vaelab.VaelabError, match="c_names"):
        load_dataset(str(tmp_path / "names.npz"))


# --- command line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def m2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "m2"
    return vaelab.train(out=out, progress=False, **tiny_settings(epochs=2, condition="label", labelled=100))


def test_cli_samples_a_class_a_grid_and_imputes(m2_run, tmp_path, capsys):
    assert main(["sample", str(m2_run.path), "--label", "3", "-n", "8", "--out", str(tmp_path / "3.png")]) == 0
    assert main(["sample", str(m2_run.path), "--grid", "-n", "20", "--out", str(tmp_path / "g.png")]) == 0
    assert main(["impute", str(m2_run.path), "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["kind"] == "label" and report["n_missing"] == 360 and report["accuracy"] > report["baseline_accuracy"]
    assert main(["impute", str(m2_run.path), "--split", "train", "--out", str(tmp_path / "filled.npz")]) == 0
    filled = np.load(tmp_path / "filled.npz")
    assert filled["was_missing"].sum() == filled["index"].size - 100  # all but the 100 kept labels


@pytest.mark.parametrize("argv, flag", [
    (["sample", "RUN", "--label", "12", "--out", "x.png"], "--label"),
    (["sample", "PLAIN", "--grid", "--out", "x.png"], "--grid"),
    (["sample", "RUN", "--covariate", "a=1", "--out", "x.png"], "--covariate"),
    (["impute", "PLAIN"], "no condition to impute"),
    (["train", "--dataset", "digits", "--labelled", "10"], "--labelled"),
    (["train", "--dataset", "digits", "--condition", "covariates"], "--condition"),
    (["train", "--dataset", "digits", "--objective", "iwae", "--free-bits", "1"], "--objective"),
])
def test_cli_conditional_misuse_is_a_one_line_error(argv, flag, m2_run, trained_run, tmp_path, capsys):
    argv = [str(m2_run.path) if a == "RUN" else str(trained_run.path) if a == "PLAIN" else a for a in argv]
    argv = [str(tmp_path / a) if a.endswith(".png") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_evaluation_reports_log_p_x_given_c(m2_run):
    """The evaluator conditions on the split's labels: its NLL is -IW_K(x | y) computed independently."""
    from vaelab.bounds.estimator import iwae_bound
    from vaelab.data.pipeline import load_data

    test = load_data(m2_run.config).test
    x, y = test.x[:100], test.y[:100]
    result = vaelab.evaluate(m2_run.model, x, iw_samples=8, seed=0, c=y)
    assert result["conditioned_on"] == "label"
    reference = -iwae_bound(m2_run.model, x, 8, torch.Generator().manual_seed(0), c=y).mean().item()
    assert result["nll"] == pytest.approx(reference, abs=1e-4)
    with pytest.raises(ValueError, match="pass c"):
        vaelab.evaluate(m2_run.model, x, iw_samples=2)


def test_covariate_model_round_trips_with_its_statistics(tmp_path):
    _brightness_npz(tmp_path / "bright.npz", n=100)
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(
        dataset=str(tmp_path / "bright.npz"), condition="covariates", epochs=1, likelihood="cbernoulli"))
    loaded = vaelab.load(run.path).model
    assert not hasattr(loaded, "covariate_net")  # every covariate observed: a plain CVAE
    torch.testing.assert_close(loaded.covariate_mean, run.model.covariate_mean)
    assert loaded.covariate_mean.abs().sum() > 0  # the training statistics, not the initial zeros
    x, c = torch.rand(3, 1, 8, 8), torch.tensor([[0.3, 4.0]] * 3)
    torch.testing.assert_close(loaded.reconstruct(x, c), run.model.reconstruct(x, c))


def test_cli_samples_a_covariate_model_at_chosen_values(tmp_path):
    _brightness_npz(tmp_path / "bright.npz", n=100)
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(
        dataset=str(tmp_path / "bright.npz"), condition="covariates", epochs=1, likelihood="cbernoulli"))
    out = tmp_path / "bright.png"
    assert main(["sample", str(run.path), "-n", "4", "--covariate", "brightness=0.5", "--out", str(out)]) == 0
    assert out.is_file()
    c, _ = run.model.condition.sample_conditions(run.model, 3, covariates={"brightness": 0.5})
    assert c[:, 0].tolist() == [0.5] * 3  # the chosen value
    torch.testing.assert_close(c[:, 1], run.model.covariate_mean[1].expand(3))  # the others at their training mean


def test_each_m2_step_adds_a_labelled_batch_that_only_classifies():
    """train_epoch marks exactly the rows drawn from the labelled examples as classification-only."""
    from tqdm import tqdm

    from vaelab.training.epoch import BatchObjective, TrainingData, train_epoch

    model = _label_model()
    x = _binary((10, 1, 4, 4))
    y = torch.tensor([0, -1, -1, 1, -1, -1, 2, -1, 3, -1])
    data = TrainingData(x=x, c=y, dynamic_binarize=False, label_weight=3.0,
                        labelled=torch.nonzero(y >= 0).squeeze(1))
    seen = []

    class Recording(BatchObjective):
        def forward(self, x, c, eps, objective, classify_only=None):
            seen.append((x.shape[0], c.clone(), classify_only.clone()))
            return super().forward(x, c, eps, objective, classify_only)

    optimizer = torch.optim.Adam(model.parameters())
    train_epoch(model, optimizer, data, 4, torch.Generator().manual_seed(0), objective_schedule(TrainConfig()), 1,
                None, tqdm(disable=True), batch_objective=Recording(model, data))
    assert [rows for rows, _, _ in seen] == [8, 8, 4]  # batches of 4, 4, 2, each with as many labelled rows
    for rows, c, classify_only in seen:
        assert classify_only.tolist() == [False] * (rows // 2) + [True] * (rows // 2)
        assert bool((c[classify_only] >= 0).all())
