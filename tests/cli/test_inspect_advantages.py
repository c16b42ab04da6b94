"""`inspect advantages`: the textbook group (rewards 1.0, 0.2, 0.5) step by step, as GRPO and RLOO compute it."""

import json
import sys

import pytest
from typer.testing import CliRunner

from tunesmith.cli.main import _register, app, main
from tunesmith.errors import TunesmithError
from tunesmith.train.advantages import group_advantages, rloo_advantages

_register()
runner = CliRunner()
TEXTBOOK = ["inspect", "advantages", "--rewards", "1.0,0.2,0.5"]


def test_grpo_steps_read_like_the_textbook():
    result = runner.invoke(app, TEXTBOOK)
    assert result.exit_code == 0, result.output
    for text in (
        "1.000   0.200   0.500",
        "/ 3 = 0.567",
        "+0.433  -0.367  -0.067",
        "sample std (n-1), as torch.std",
        "sqrt((0.433² + 0.367² + 0.067²) / 2) = 0.404",
        "+1.072  -0.907  -0.165",
        "the trainer uses (r - mean) / (group std + 1e-4)",
        "scale_rewards=group (TRL's default)",
    ):
        assert text in result.output, text


@pytest.mark.parametrize("scale, uses", [("none", "the trainer uses r - mean\n"), ("batch", "the trainer uses (r - mean) / (batch std + 1e-4)")])
def test_scale_rewards_says_what_the_trainer_uses(scale, uses):
    result = runner.invoke(app, [*TEXTBOOK, "--scale-rewards", scale])
    assert result.exit_code == 0, result.output
    assert uses in result.output and f"with scale_rewards={scale}\n" in result.output


def test_rloo_shows_the_leave_one_out_baseline():
    result = runner.invoke(app, [*TEXTBOOK, "--estimator", "rloo"])
    assert result.exit_code == 0, result.output
    # baselines (0.2 + 0.5) / 2, (1.0 + 0.5) / 2, (1.0 + 0.2) / 2; advantages reward - baseline
    for text in ("0.350   0.750   0.600   mean of the others", "(0.200 + 0.500) / 2 = 0.350", "+0.650  -0.550  -0.100", "the trainer uses r - b"):
        assert text in result.output, text


def test_json_holds_the_library_numbers():
    result = runner.invoke(app, [*TEXTBOOK, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["estimator"] == "grpo" and out["scale_rewards"] == "group" and out["group_size"] == 3 and "n-1" in out["std_kind"]
    assert out["group_mean"] == pytest.approx([0.5667] * 3, abs=1e-4) and out["centered"] == pytest.approx([0.4333, -0.3667, -0.0667], abs=1e-4)
    assert out["advantages"] == group_advantages([1.0, 0.2, 0.5]).advantages.tolist()
    rloo = json.loads(runner.invoke(app, [*TEXTBOOK, "--estimator", "rloo", "--json"]).stdout)
    assert rloo["baseline"] == pytest.approx([0.35, 0.75, 0.6]) and rloo["advantages"] == rloo_advantages([1.0, 0.2, 0.5]).advantages.tolist()


def test_groups():
    result = runner.invoke(app, ["inspect", "advantages", "--rewards", "1,0,1,1", "--group-size", "2", "--json"])
    out = json.loads(result.stdout)
    assert out["group_mean"] == [0.5, 0.5, 1.0, 1.0] and out["advantages"][2:] == [0.0, 0.0]  # an all-equal group: 0 / (0 + 1e-4)
    text = runner.invoke(app, ["inspect", "advantages", "--rewards", "1,0,1,1", "-g", "2"]).output
    assert "2 groups of 2" in text and "group 2: completions 3-4" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rewards", "1,x"], "--rewards: 'x' is not a number"),
        (["--rewards", "1,2,3", "--group-size", "2"], "3 rewards do not divide into groups of 2"),
        (["--rewards", "1,2", "--estimator", "ppo"], "--estimator is 'ppo'; it must be grpo or rloo"),
        (["--rewards", "1,2", "--scale-rewards", "mean"], "scale_rewards is 'mean'"),
        (["--rewards", "1,2", "--estimator", "rloo", "--scale-rewards", "none"], "--scale-rewards is GRPO's option"),
    ],
)
def test_bad_input_is_one_sentence(args, message):
    result = runner.invoke(app, ["inspect", "advantages", *args])
    assert isinstance(result.exception, TunesmithError) and message in str(result.exception)


def test_bad_value_exits_2_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tunesmith", *TEXTBOOK[:2], "--rewards", "1,x"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'x' is not a number" in err and "Traceback" not in err


# ---------------------------------------------------------------- PPO: GAE over one response's tokens
GAE = ["inspect", "advantages", "--rewards", "0,0,1", "--values", "0.5,0.6,0.7"]


def test_gae_single_step_is_the_textbook_r_minus_v():
    result = runner.invoke(app, ["inspect", "advantages", "--rewards", "1.0", "--values", "0.6", "--gamma", "1", "--lam", "1"])
    assert result.exit_code == 0, result.output
    for text in ("GAE: 1 token, gamma 1, lam 1", "1.000 + 1.00 x 0.000 - 0.600 = +0.400", "A = R - V = 1.000 - 0.600 = +0.400"):
        assert text in result.output, text


def test_gae_three_tokens_worked_backwards():
    result = runner.invoke(app, [*GAE, "--gamma", "1", "--lam", "0.95"])
    assert result.exit_code == 0, result.output
    # deltas: 0 + 0.6 - 0.5, 0 + 0.7 - 0.6, 1 + 0 - 0.7; A_3 = 0.3, A_2 = 0.1 + 0.95 x 0.3, A_1 = 0.1 + 0.95 x 0.385 = 0.46575
    for text in (
        "GAE: 3 tokens, gamma 1, lam 0.95",
        "delta_t = r_t + gamma * V_{t+1} - V_t",
        "A_t = delta_t + gamma * lam * A_{t+1}",
        "return_t = A_t + V_t",
        "1.000 + 1.00 x 0.000 - 0.700 = +0.300",
        "0.000 + 1.00 x 0.700 - 0.600 = +0.100",
        "0.000 + 1.00 x 0.600 - 0.500 = +0.100",
        "+0.100 + 1.00 x 0.95 x +0.300 = +0.385",
        "+0.100 + 1.00 x 0.95 x +0.385 = +0.466",
        "+0.466  +0.385  +0.300",
        "0.966   0.985   1.000",
    ):
        assert text in result.output, text
    assert result.output.index("  3  1.000") < result.output.index("  1  0.000")  # last token first
    assert "A_t = R - V_t" not in result.output  # lam < 1: no textbook reduction


def test_gae_json_holds_the_library_numbers():
    from tunesmith.train.advantages import gae

    out = json.loads(runner.invoke(app, [*GAE, "--json"]).stdout)
    assert out["estimator"] == "gae" and out["gamma"] == 1.0 and out["lam"] == 0.95
    assert out["deltas"] == pytest.approx([0.1, 0.1, 0.3]) and out["advantages"] == pytest.approx([0.46575, 0.385, 0.3])
    assert out["returns"] == pytest.approx([0.96575, 0.985, 1.0]) and out["next_values"] == pytest.approx([0.6, 0.7, 0.0])
    assert out["advantages"] == gae([0, 0, 1], [0.5, 0.6, 0.7]).advantages.tolist()
    assert json.loads(runner.invoke(app, [*GAE, "--estimator", "gae", "--json"]).stdout) == out


def test_gae_with_gamma_and_lam_1_says_every_a_is_r_minus_v():
    result = runner.invoke(app, [*GAE, "--gamma", "1", "--lam", "1"])
    assert result.exit_code == 0, result.output
    assert (
        "with gamma = lam = 1 and one terminal reward R = 1.000, A_t = R - V_t: 1.000 - 0.500 = +0.500, 1.000 - 0.600 = +0.400, 1.000 - 0.700 = +0.300"
    ) in result.output


def test_gae_lam_0_is_the_td_error():
    result = runner.invoke(app, [*GAE, "--lam", "0", "--json"])
    out = json.loads(result.stdout)
    assert out["advantages"] == out["deltas"] == pytest.approx([0.1, 0.1, 0.3])
    text = runner.invoke(app, [*GAE, "--lam", "0"]).output
    assert "+0.100 + 1.00 x 0.00 x +0.100 = +0.100" in text and "each A_t is its delta_t" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rewards", "0,1", "--values", "0.5"], "(2,) rewards and (1,) values; give one value per reward"),
        (["--rewards", "0,1", "--values", "0.5,0.6", "--group-size", "2"], "--group-size is for GRPO and RLOO groups"),
        (
            ["--rewards", "0,1", "--values", "0.5,0.6", "--scale-rewards", "none", "--normalize-advantages"],
            "--scale-rewards and --normalize-advantages are for GRPO and RLOO groups",
        ),
        (["--rewards", "0,1", "--estimator", "gae"], "give --values"),
        (["--rewards", "0,1", "--values", "0.5,0.6", "--estimator", "rloo"], "--values is GAE's option"),
        (["--rewards", "1", "--values", "0.6", "--gamma", "1.5"], "gamma is 1.5 and lam is 0.95; both must lie in [0, 1]"),
        (["--rewards", "1,2", "--gamma", "0.9"], "--gamma and --lam are GAE's options; give --values"),
        (["--rewards", "1", "--values", "x"], "--values: 'x' is not a number"),
    ],
)
def test_gae_bad_input_is_one_sentence(args, message):
    result = runner.invoke(app, ["inspect", "advantages", *args])
    assert isinstance(result.exception, TunesmithError) and message in str(result.exception)
