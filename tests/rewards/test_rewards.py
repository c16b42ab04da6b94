"""Rewards: the shared table of built-ins, user functions and their errors, the TRL bridge, the reward model."""

from __future__ import annotations

import sys

import pytest

from tunesmith.errors import DataError, RecipeError, TrainingError
from tunesmith.rewards import REWARDS, Reward, load_reward
from tunesmith.rewards.trl_bridge import trl_reward_functions

# (name, options, prompt, completion, columns, expected): a new built-in adds its rows here.
CASES = [
    ("exact_answer", {}, "3 + 4?", "7", {"answer": 7}, 1.0),
    ("exact_answer", {}, "3 + 4?", " 7. ", {"answer": "7"}, 1.0),
    ("exact_answer", {}, "3 + 4?", "7.0", {"answer": 7}, 1.0),
    ("exact_answer", {}, "3 + 4?", "3 + 4 = 7", {"answer": 7}, 0.0),
    ("exact_answer", {}, "capital?", "Paris.", {"answer": "Paris"}, 1.0),
    ("exact_answer", {}, "capital?", "paris", {"answer": "Paris"}, 0.0),
    ("numeric_answer", {}, "3 + 4?", "3 + 4 = 7", {"answer": 7}, 1.0),
    ("numeric_answer", {}, "3 + 4?", "It is 7.", {"answer": "7"}, 1.0),
    ("numeric_answer", {}, "3 + 4?", "7 is not it, 8 is", {"answer": 7}, 0.0),
    ("numeric_answer", {}, "5 - 17?", "5 - 17 = -12", {"answer": -12}, 1.0),
    ("numeric_answer", {}, "5 - 17?", "12", {"answer": -12}, 0.0),
    ("numeric_answer", {}, "1000 + 234?", "That makes 1,234 coins", {"answer": 1234}, 1.0),
    ("numeric_answer", {}, "1000 + 234?", "1,234", {"answer": "1,234"}, 1.0),
    ("numeric_answer", {}, "half of 7?", "3.5", {"answer": 3.5}, 1.0),
    ("numeric_answer", {}, "3 + 4?", "seven", {"answer": 7}, 0.0),
    ("format", {}, "3 + 4?", " 7\n", {}, 1.0),
    ("format", {}, "3 + 4?", "-12", {}, 1.0),
    ("format", {}, "3 + 4?", "3 + 4 = 7", {}, 0.0),
    ("format", {"pattern": r"\d+", "search": True}, "3 + 4?", "3 + 4 = 7", {}, 1.0),
    ("format", {"pattern": r"<answer>.*</answer>"}, "q", "<answer>7</answer>", {}, 1.0),
    ("length_penalty", {"max_chars": 100}, "q", "x" * 50, {}, 0.0),
    ("length_penalty", {"max_chars": 100}, "q", "x" * 100, {}, 0.0),
    ("length_penalty", {"max_chars": 100}, "q", "x" * 150, {}, -0.5),
    ("length_penalty", {"max_chars": 100}, "q", "x" * 250, {}, -1.0),
    ("length_penalty", {}, "q", "x" * 120, {}, -0.2),
    ("no_template_leakage", {}, "q", "Arr, seven it be.", {}, 1.0),
    ("no_template_leakage", {}, "q", "Seven.<|im_end|>", {}, 0.0),
    ("no_template_leakage", {}, "q", "[INST] more [/INST]", {}, 0.0),
    ("no_template_leakage", {}, "q", "Seven.\nuser\nAnd eight?", {}, 0.0),
    ("no_template_leakage", {}, "q", "assistant\nSeven.", {}, 0.0),
    ("no_template_leakage", {}, "q", "Ask the user\nand the assistant.", {}, 1.0),
]


@pytest.mark.parametrize("name, options, prompt, completion, columns, expected", CASES)
def test_builtin_table(name, options, prompt, completion, columns, expected):
    reward = load_reward(name, options=options)
    scores = reward([prompt], [completion], **{k: [v] for k, v in columns.items()}, unused=["ignored"])
    assert scores == [pytest.approx(expected)]
    assert reward.name == name


def test_every_builtin_has_a_row():
    assert {c[0] for c in CASES} == set(REWARDS)


def test_builtins_score_a_batch_in_order():
    reward = load_reward("numeric_answer")
    assert reward(["a", "b", "c"], ["1", "x 2", "3"], answer=[1, 2, 4]) == [1.0, 1.0, 0.0]


def test_missing_column_is_named_with_what_the_dataset_has():
    reward = load_reward("exact_answer", where="grpo.rewards[1]")
    with pytest.raises(RecipeError, match=r"grpo.rewards\[1\]: exact_answer needs a dataset column 'answer'; the dataset has: question, solution"):
        reward(["q"], ["7"], question=["q"], solution=["7"])


def test_non_numeric_answer_is_a_data_error():
    with pytest.raises(DataError, match="row 0 has 'seven'"):
        load_reward("numeric_answer")(["q"], ["7"], answer=["seven"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"function": "exact_anwser"}, "unknown reward function 'exact_anwser' \\(did you mean 'exact_answer'\\?\\)"),
        ({}, "exactly one"),
        ({"function": "format", "reward_model": "x"}, "exactly one"),
        ({"function": "format", "options": {"patern": "x"}}, "format has no option 'patern'"),
        ({"function": "format", "options": {"pattern": "(unclosed"}}, "not a valid regular expression"),
        ({"function": "length_penalty", "options": {"max_chars": "long"}}, "expected int \\(default 100\\)"),
        ({"function": "length_penalty", "options": {"max_chars": 0}}, "max_chars must be a positive"),
        ({"function": "format", "weight": float("nan")}, "not a finite number"),
    ],
)
def test_bad_builtin_requests_are_recipe_errors(kwargs, message):
    with pytest.raises(RecipeError, match=message) as info:
        load_reward(**kwargs)
    assert info.value.where.startswith("grpo.rewards[0]")


def test_unknown_builtin_lists_the_known_ones_and_a_bad_option_the_valid_ones():
    with pytest.raises(RecipeError) as info:
        load_reward("nonsense")
    assert all(name in info.value.hint for name in REWARDS)
    with pytest.raises(RecipeError) as info:
        load_reward("format", options={"patern": "x"})
    assert info.value.hint == "its options: pattern, search"


# --- user functions --------------------------------------------------------------------------------

USER_CODE = """
def short(prompts, completions, *, limit=5, **kwargs):
    return [1.0 if len(c) <= limit else 0.0 for c in completions]

def needs_answer(prompts, completions, answer, **kwargs):
    return [float(c == a) for c, a in zip(completions, answer)]

def no_kwargs(prompts, completions):
    return [0.0 for _ in completions]

def odd_names(p, c, **kwargs):
    return [0.0 for _ in c]

def boom(prompts, completions, **kwargs):
    return [1 / 0 for _ in completions]

def too_few(prompts, completions, **kwargs):
    return [1.0]

def words(prompts, completions, **kwargs):
    return ["good" for _ in completions]

def maybe(prompts, completions, **kwargs):
    return [None if c == "?" else 1 for c in completions]

async def later(prompts, completions, **kwargs):
    return [0.0 for _ in completions]

THRESHOLD = 3
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_CODE)
    return path


def test_file_function_gets_options_and_columns(user_file):
    reward = load_reward(f"{user_file}:short", options={"limit": 3}, weight=0.5)
    assert (reward.name, reward.weight) == ("short", 0.5)
    assert reward(["q", "q"], ["abc", "abcd"], answer=[1, 2]) == [1.0, 0.0]
    needs = load_reward(f"{user_file}:needs_answer")
    assert needs.columns == ("answer",)
    assert needs(["q"], ["7"], answer=["7"]) == [1.0]
    with pytest.raises(RecipeError, match="needs_answer needs a dataset column 'answer'"):
        needs(["q"], ["7"])


def test_module_function(user_file, monkeypatch):
    monkeypatch.syspath_prepend(str(user_file.parent))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    reward = load_reward("my_rewards:short")
    assert reward(["q"], ["hi"]) == [1.0]


def test_none_means_not_applicable(user_file):
    assert load_reward(f"{user_file}:maybe")(["q", "q"], ["?", "7"]) == [None, 1.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{dir}/missing.py:short", "the reward file '.*missing.py' does not exist"),
        ("no_such_module_xyz:fn", "cannot import the module 'no_such_module_xyz'"),
        ("{file}:absent", "has no function 'absent'"),
        ("{file}:THRESHOLD", "is not a function \\(its type is int\\)"),
        ("{file}:no_kwargs", r"signature no_kwargs\(prompts, completions\), which cannot take"),
        ("{file}:odd_names", "signature odd_names"),
        ("{file}:later", "is an async function"),
        ("{file}:", "does not name a function"),
    ],
)
def test_bad_user_functions_are_recipe_errors(user_file, spec, message):
    with pytest.raises(RecipeError, match=message):
        load_reward(spec.format(dir=user_file.parent, file=user_file))


def test_user_file_that_fails_to_run(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(prompts, completions, **kw):\n    return [\n")
    with pytest.raises(RecipeError, match="running '.*broken.py' failed \\(line 2\\): SyntaxError"):
        load_reward(f"{bad}:f")


def test_hints_say_what_to_write(user_file):
    with pytest.raises(RecipeError) as info:
        load_reward(f"{user_file}:absent")
    assert "short" in info.value.hint and "needs_answer" in info.value.hint
    with pytest.raises(RecipeError) as info:
        load_reward(f"{user_file}:no_kwargs")
    assert "def fn(prompts, completions, **columns)" in info.value.hint


@pytest.mark.parametrize(
    "name, message",
    [
        ("boom", "the reward function 'boom' raised ZeroDivisionError: division by zero"),
        ("too_few", "the reward function 'too_few' returned 1 value for 2 completions"),
        ("words", "the reward function 'words' returned 'good' \\(a str\\) for completion 0"),
    ],
)
def test_user_function_failing_at_call_time_is_a_training_error(user_file, name, message):
    reward = load_reward(f"{user_file}:{name}")
    with pytest.raises(TrainingError, match=message):
        reward(["q", "q"], ["a", "b"])


# --- TRL bridge -------------------------------------------------------------------------------------

TRL_EXTRAS = {"completion_ids": [[1], [2]], "trainer_state": object(), "log_extra": print, "log_metric": print}


def test_bridge_converts_conversations_to_text():
    seen = {}

    def spy(prompts, completions, **columns):
        seen.update(prompts=prompts, completions=completions, columns=columns)
        return [1.0] * len(completions)

    functions, weights = trl_reward_functions([Reward("spy", spy, weight=2.0)])
    prompts = [[{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "3 + 4?"}]] * 2
    completions = [[{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": [{"type": "text", "text": "8"}]}]]
    assert functions[0](prompts=prompts, completions=completions, answer=[7, 7], **TRL_EXTRAS) == [1.0, 1.0]
    assert seen == {"prompts": ["3 + 4?", "3 + 4?"], "completions": ["7", "8"], "columns": {"answer": [7, 7]}}
    assert weights == [2.0]


def test_bridge_standard_data_and_unique_names():
    rewards = [load_reward("format"), load_reward("numeric_answer", weight=0.5), load_reward("format", options={"search": True}), load_reward("format")]
    functions, weights = trl_reward_functions(rewards)
    assert [f.__name__ for f in functions] == ["format", "numeric_answer", "format_2", "format_3"]
    assert weights == [1.0, 0.5, 1.0, 1.0]
    out = functions[1](prompts=["3 + 4?", "5 - 17?"], completions=["3 + 4 = 7", "-12"], answer=[7, -12], **TRL_EXTRAS)
    assert out == [1.0, 1.0] and all(type(x) is float for x in out)


def test_bridge_gives_raw_prompts_to_rewards_that_ask():
    seen = []
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    reward = Reward("raw", lambda prompts, completions, **_: seen.extend(prompts) or [0.0], raw_prompts=True)
    trl_reward_functions([reward])[0][0](prompts=[conversation], completions=[[{"role": "assistant", "content": "a"}]], **TRL_EXTRAS)
    assert seen == [conversation]


# --- reward model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    path = tmp_path_factory.mktemp("tiny-reward")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


def test_reward_model_scores_each_completion(tiny_reward_model_dir):
    reward = load_reward(reward_model=tiny_reward_model_dir, weight=0.3)
    assert (reward.name, reward.raw_prompts, reward.weight) == ("reward_model", True, 0.3)
    conversation = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "3 + 4?"}]
    functions, _ = trl_reward_functions([reward])
    scores = functions[0](
        prompts=[conversation, "3 + 4?", conversation], completions=[[{"role": "assistant", "content": c}] for c in ("7", "Arr, 7", "8")], **TRL_EXTRAS
    )
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores[0] != scores[2]


def test_reward_model_option_is_checked(tiny_reward_model_dir):
    with pytest.raises(RecipeError, match="reward_model has no option 'batch'"):
        load_reward(reward_model=tiny_reward_model_dir, options={"batch": 2})


def test_a_causal_model_is_not_a_reward_model(tiny_model_dir, tmp_path):
    with pytest.raises(RecipeError, match="is not a reward model") as info:
        load_reward(reward_model=tiny_model_dir)
    assert "tunesmith reward" in info.value.hint
    with pytest.raises(RecipeError, match="holds no model"):
        load_reward(reward_model=str(tmp_path))
    with pytest.raises(RecipeError, match="built-in chat model"):
        load_reward(reward_model="smollm2-135m-instruct")
